"""The names of every key the gateway keeps in Redis.

All of a gateway's keys start with ``aigw:<CLUSTER_NAME>:``, so several gateways can
share one Redis and an operator can find them. Keys carry a hash tag (the part in
braces) so that every script touches one slot of a Redis Cluster:

* coordination (membership, limits, pauses, health, settings, the cache's generation)
  shares the tag ``{aigw:<name>}``: it is a handful of small keys, read and written a few
  times a second by each node, and one slot lets one script read or change any of them;
* each cache entry and its in-flight claim share a tag made of the entry's key, so the
  entries spread over the cluster and a claim sits beside the entry it waits for.
"""

from __future__ import annotations

__all__ = ("Keys",)


class Keys:
    """Key names for the gateway called ``cluster_name``."""

    __slots__ = ("coordination", "prefix")

    def __init__(self, cluster_name: str) -> None:
        self.prefix = f"aigw:{cluster_name}:"
        self.coordination = f"{{aigw:{cluster_name}}}:"

    def nodes(self) -> str:
        """A sorted set: node id -> its last heartbeat (Redis time, ms)."""
        return self.coordination + "nodes"

    def node(self, node_id: str) -> str:
        """A node's own document (its figures), expiring unless renewed."""
        return f"{self.coordination}node:{node_id}"

    def limit(self, provider: str) -> str:
        """A hash: the state of a provider's global bucket and each node's want (``leases``)."""
        return f"{self.coordination}limit:{provider}"

    def token_limit(self, provider: str) -> str:
        """A hash: the state of a provider's global token bucket (``<PROVIDER>_TPM``) and
        each node's want, as ``limit``'s."""
        return f"{self.coordination}tpm:{provider}"

    def key_limit(self, key_id: str, kind: str) -> str:
        """A hash: the state of a tenant key's global bucket (``kind``: ``rpm`` or
        ``tpm``) and each node's want, as ``limit``'s (``key_leases``)."""
        return f"{self.coordination}key-{kind}:{key_id}"

    def coordination_key(self, *parts: str) -> str:
        """Any other coordination key (``limit``, ``pause``, ``settings``...)."""
        return self.coordination + ":".join(parts)

    def cache_entry(self, key: bytes) -> str:
        return f"{self.prefix}c:{{{key.hex()}}}"

    def cache_entries(self) -> str:
        """The pattern (``SCAN MATCH``) of every cache entry of this gateway."""
        return f"{self.prefix}c:*"

    def cache_generation(self) -> str:
        """A counter that ``DELETE /admin/cache`` moves: each node clears its first tier."""
        return self.coordination + "cache-generation"

    def in_flight(self, key: bytes) -> str:
        return f"{self.prefix}f:{{{key.hex()}}}"

    def stored_response(self, owner: str, response_id: str) -> str:
        """A stored Response of ``owner`` (``/v1/responses`` with ``store``), or its
        tombstone once deleted; each record in a slot of its own."""
        return f"{self.prefix}r:{{{owner}:{response_id}}}"

    def stored_item(self, owner: str, item_id: str) -> str:
        """The id of the stored Response holding an output item (``item_reference``)."""
        return f"{self.prefix}ri:{{{owner}:{item_id}}}"

    def signatures(self) -> str:
        """A stream of Gemini's thought signatures as nodes keep them (capped)."""
        return self.coordination + "signatures"

    def tenant_key(self, name: str) -> str:
        """Tenant keys (``cluster/key_store.py``): ``records`` (a hash: key id -> its
        record), ``names`` and ``slots`` (live keys' names and slots -> id),
        ``generation`` (moved by every change), ``pepper`` (of the secrets' hash)."""
        return f"{self.coordination}tenant-keys:{name}"

    def tenant_spend(self, key_id: str) -> str:
        """A hash: a tenant key's spend, ``<period>|<r, p, c or n>`` -> requests, prompt
        and completion tokens, nano-dollars."""
        return f"{self.coordination}tenant-spend:{key_id}"

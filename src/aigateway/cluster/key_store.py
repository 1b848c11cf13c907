"""Tenant keys shared through Redis (with REDIS_URL): Redis is the store, SQLite the copy.

Redis (the coordination Redis, never the cache's: keys must not be evicted) holds every
key's record and every key's spend, under the coordination hash tag (``Keys.tenant_key``,
``Keys.tenant_spend``), so one script may touch any of them, on a single server as on a
cluster. Each node keeps its ``keys.db`` as its local copy, which its workers read as on
one node (no Redis call on the request path, none when they reload the keys):

* **Changes** (``POST``, ``PATCH``, ``DELETE /admin/keys``) go to Redis first, by one
  script (``PUT_KEY_V1``) that keeps names and slots unique among live keys and moves the
  keys' generation; then into the node's copy, and the node's workers reload at once.
  Other nodes' agents see the generation move within ``KeySync.interval_s`` (0.1 s),
  copy the records into their ``keys.db`` and move their node's generation: a revocation
  holds on every node within a second.  With Redis unreachable, changes are refused (503,
  ``key_store_unavailable``); keys already known keep working.
* **Spend**: workers flush into ``keys.db`` as on one node, and also into its ``outbox``;
  the node's agent sends the outbox to Redis (``SPEND_V1``: integer counters, USD in
  nano-dollars, one script per flush) and takes back the totals (``key_sync.py``).
* **Start** (``prepare_shared_keys``, in the main process before the workers): the
  secrets' pepper comes from Redis (the first node to start gives its own; every node
  writes Redis's into its ``keys.pepper``, so a secret hashes alike everywhere); when
  Redis holds no key yet, this node's keys and spend are moved there (migration from one
  node); then the node's copy is made from Redis.  Redis's persistence is checked, and a
  Redis that would lose or evict the keys is named in a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

import orjson
import redis

from aigateway.cluster.keys import Keys
from aigateway.errors import GatewayError
from aigateway.keys.model import TenantKey
from aigateway.keys.secrets import SecretHasher, new_id, new_secret, shown_prefix
from aigateway.keys.store import PEPPER, SqliteKeyStore, StoreUnavailable, key_not_found

__all__ = (
    "NANO",
    "PUT_KEY_V1",
    "SPEND_V1",
    "RedisKeyStore",
    "decode_record",
    "encode_record",
    "persistence_problems",
    "prepare_shared_keys",
    "spend_fields",
    "sync_client",
)

logger = logging.getLogger("aigateway.keys")

NANO: Final = 1_000_000_000  # USD are counted in Redis as integer nano-dollars
COUNTERS: Final = ("r", "p", "c", "n")  # requests, prompt, completion tokens, nano-dollars
_TRIES: Final = 8

# v1. KEYS: records, names, slots, generation. ARGV: id, the record expected ("" for a new
# key), the new record, its name, its slot, "1" live / "0" revoked, its old name.
# -> {"ok", generation} or {"changed"|"name_taken"|"slot_taken"}
PUT_KEY_V1: Final = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return {'changed'} end
local id, name, slot, live, old = ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if live == '1' then
  local owner = redis.call('HGET', KEYS[2], name)
  if owner and owner ~= id then return {'name_taken'} end
  owner = redis.call('HGET', KEYS[3], slot)
  if owner and owner ~= id then return {'slot_taken'} end
end
if old ~= '' and redis.call('HGET', KEYS[2], old) == id then redis.call('HDEL', KEYS[2], old) end
if live == '1' then
  redis.call('HSET', KEYS[2], name, id)
  redis.call('HSET', KEYS[3], slot, id)
elseif redis.call('HGET', KEYS[3], slot) == id then
  redis.call('HDEL', KEYS[3], slot)
end
redis.call('HSET', KEYS[1], id, ARGV[3])
return {'ok', redis.call('INCR', KEYS[4])}
"""

# v1. KEYS: the spend hashes of some keys. ARGV[1]: JSON, per key a list of [field,
# "delta"] to add; ARGV[2]: JSON, per key the fields to answer. -> per key, their values.
SPEND_V1: Final = """
local adds = cjson.decode(ARGV[1])
local reads = cjson.decode(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  for _, pair in ipairs(adds[i]) do redis.call('HINCRBY', key, pair[1], pair[2]) end
  if #reads[i] > 0 then out[i] = redis.call('HMGET', key, unpack(reads[i])) else out[i] = {} end
end
return out
"""

SyncClient = redis.Redis | redis.RedisCluster


def sync_client(url: str, timeout_s: float) -> SyncClient:
    """A blocking client (admin changes run in a thread; the start runs before workers)."""
    scheme, _, rest = url.partition("://")
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "client_name": "aigateway-keys",
    }
    if scheme.lower().endswith("+cluster"):
        return redis.RedisCluster.from_url(
            f"{scheme.lower().removesuffix('+cluster')}://{rest}", **options
        )
    if scheme.lower().endswith("+sentinel"):
        raise StoreUnavailable("tenant keys through Redis Sentinel are not supported yet")
    return redis.Redis.from_url(url, **options)


def encode_record(row: tuple[Any, ...]) -> bytes:
    key_id, name, digest, prefix, slot, fields, created_at, revoked_at = row
    return orjson.dumps(
        {
            "id": key_id,
            "name": name,
            "digest": bytes(digest).hex(),
            "prefix": prefix,
            "slot": slot,
            "fields": fields,
            "created_at": created_at,
            "revoked_at": revoked_at,
        }
    )


def decode_record(raw: bytes) -> tuple[Any, ...]:
    r = orjson.loads(raw)
    return (
        r["id"],
        r["name"],
        bytes.fromhex(r["digest"]),
        r["prefix"],
        int(r["slot"]),
        r["fields"],
        float(r["created_at"]),
        r["revoked_at"],
    )


def spend_fields(period: str) -> list[str]:
    return [f"{period}|{c}" for c in COUNTERS]


def _conflict(message: str, code: str) -> GatewayError:
    return GatewayError(message, status=409, error_type="invalid_request_error", code=code)


class RedisKeyStore(SqliteKeyStore):
    """A worker's store with REDIS_URL: changes through Redis, reads from the node's copy."""

    def __init__(self, directory: str, url: str, cluster_name: str, timeout_s: float) -> None:
        super().__init__(directory, outbox=True)
        self.cluster_keys = Keys(cluster_name)
        self._client = sync_client(url, timeout_s)
        self._put = self._client.register_script(PUT_KEY_V1)

    def create(self, fields: Mapping[str, Any]) -> tuple[TenantKey, str]:
        secret = new_secret()
        key_id = new_id()
        limits = {name: value for name, value in fields.items() if name != "name"}
        name = str(fields["name"])
        base = (key_id, name, self.hasher.digest(secret), shown_prefix(secret))
        for _ in range(_TRIES):
            taken = {int(s) for s in self._call(lambda: self._client.hkeys(self._k("slots")))}
            slot = next((i for i in range(self.slots) if i not in taken), None)
            if slot is None:
                raise _conflict(
                    f"every one of the cluster's {self.slots} key slots is taken:"
                    " revoke a key first",
                    "key_capacity_reached",
                )
            row = (*base, slot, orjson.dumps(limits).decode(), time.time(), None)
            if self._write_record(row, b"", "") != "slot_taken":
                break
        else:
            raise StoreUnavailable("the key store is busy (slots taken meanwhile): try again")
        key = self.get(key_id)
        assert key is not None
        return key, secret

    def update(self, key_id: str, fields: Mapping[str, Any]) -> TenantKey:
        def change(row: tuple[Any, ...]) -> tuple[Any, ...]:
            limits = orjson.loads(row[5])
            limits.update({n: v for n, v in fields.items() if n != "name"})
            name = str(fields.get("name", row[1]))
            return (row[0], name, *row[2:5], orjson.dumps(limits).decode(), *row[6:])

        return self._change(key_id, change)

    def revoke(self, key_id: str) -> TenantKey:
        return self._change(key_id, lambda row: (*row[:7], time.time()))

    def close(self) -> None:
        super().close()
        self._client.close()

    # -- internals -----------------------------------------------------------------------

    def _k(self, name: str) -> str:
        return self.cluster_keys.tenant_key(name)

    def _change(self, key_id: str, change: Any) -> TenantKey:
        for _ in range(_TRIES):
            raw = self._call(lambda: self._client.hget(self._k("records"), key_id))
            if raw is None:
                raise key_not_found(key_id)
            row = decode_record(cast("bytes", raw))
            if row[7] is not None:
                raise key_not_found(key_id)
            if self._write_record(change(row), cast("bytes", raw), row[1]) != "changed":
                break
        else:
            raise StoreUnavailable("the key store is busy (the key changed meanwhile): try again")
        key = self.get(key_id)
        assert key is not None
        return key

    def _write_record(self, row: tuple[Any, ...], expected: bytes, old_name: str) -> str:
        """``PUT_KEY_V1``; then the node's copy. "ok", "changed" or "slot_taken"."""
        keys = [self._k("records"), self._k("names"), self._k("slots"), self._k("generation")]
        args = [
            row[0],
            expected,
            encode_record(row),
            row[1],
            row[4],
            "1" if row[7] is None else "0",
            old_name,
        ]
        answer = self._call(lambda: self._put(keys=keys, args=args))
        status = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
        if status == "name_taken":
            raise _conflict(f"a key named {row[1]!r} exists already", "key_name_taken")
        if status == "ok":
            self.put_rows([row])
        return status

    def _call(self, call: Any) -> Any:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"the key store (Redis) is unavailable: {exc}") from exc


# -- start-up ---------------------------------------------------------------------------


def prepare_shared_keys(
    url: str, cluster_name: str, directory: str, timeout_s: float
) -> dict[tuple[str, str], list[int]] | None:
    """Pepper, migration, persistence check and the node's copy (see module); the spend
    totals copied (key id, period) -> counters, or None when Redis could not be reached
    (the node starts on its copy; the agent catches up)."""
    keys = Keys(cluster_name)
    try:
        client = sync_client(url, max(timeout_s, 2.0))
    except StoreUnavailable as exc:
        logger.error("%s", exc)
        return None
    try:
        for problem in persistence_problems(client):
            logger.warning("Redis at %s: %s", url.rpartition("@")[2], problem)
        local = SqliteKeyStore(directory)
        try:
            pepper = _shared_pepper(client, keys, directory)
            if pepper is not None and not client.exists(keys.tenant_key("records")):
                _migrate(client, keys, local)
            return copy_from_redis(client, keys, local)
        finally:
            local.close()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        logger.error(
            "could not reach Redis for the tenant keys (this node serves its own copy): %s", exc
        )
        return None
    finally:
        client.close()


def _shared_pepper(client: SyncClient, keys: Keys, directory: str) -> bytes | None:
    """Redis's pepper (this node's, when it is the first), written to ``keys.pepper``;
    None when this node's own was another (its keys cannot be moved to Redis)."""
    path = os.path.join(directory, PEPPER)
    with open(path, "rb") as mine:
        own = mine.read()
    client.set(keys.tenant_key("pepper"), own, nx=True)
    shared = cast("bytes", client.get(keys.tenant_key("pepper")))
    SecretHasher(shared)  # a pepper of the right size
    if shared == own:
        return own
    aside = f"{path}.{os.getpid()}.shared"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as new:
        new.write(shared)
    os.replace(aside, path)
    if _has_keys(directory):
        logger.warning(
            "this node's tenant keys were made with a pepper of its own: the cluster's keys"
            " (from Redis) replace them; make them again on any node"
        )
    return None


def _has_keys(directory: str) -> bool:
    store = SqliteKeyStore(directory)
    try:
        return bool(store.rows())
    finally:
        store.close()


def _migrate(client: SyncClient, keys: Keys, local: SqliteKeyStore) -> None:
    """Redis holds no key: this node's keys and spend become the cluster's."""
    rows = local.rows()
    if not rows:
        return
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.hset(keys.tenant_key("records"), row[0], encode_record(row))
        if row[7] is None:
            pipe.hset(keys.tenant_key("names"), row[1], row[0])
            pipe.hset(keys.tenant_key("slots"), str(row[4]), row[0])
    for key_id, period, requests, prompt, completion, usd in local.spend_rows():
        values = (requests, prompt, completion, round(usd * NANO))
        pipe.hset(
            keys.tenant_spend(key_id), mapping=dict(zip(spend_fields(period), values, strict=True))
        )
    pipe.incr(keys.tenant_key("generation"))
    pipe.execute()
    logger.info("moved this node's %d tenant keys and their spend to Redis", len(rows))


def copy_from_redis(
    client: SyncClient, keys: Keys, local: SqliteKeyStore
) -> dict[tuple[str, str], list[int]]:
    """The node's copy made from Redis: every record, and every key's spend."""
    records = cast("dict[bytes, bytes]", client.hgetall(keys.tenant_key("records")))
    rows = [decode_record(raw) for raw in records.values()]
    totals: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        spent = cast("dict[bytes, bytes]", client.hgetall(keys.tenant_spend(row[0])))
        for field, value in spent.items():
            period, _, counter = field.decode().rpartition("|")
            if counter in COUNTERS:
                totals.setdefault((row[0], period), [0, 0, 0, 0])[COUNTERS.index(counter)] = int(
                    value
                )
    local.put_rows(rows, replace=True)
    local.settle_outbox(0, _as_rows(totals))  # Redis's totals, plus what is still to send
    return totals


def _as_rows(totals: Mapping[tuple[str, str], list[int]]) -> Iterable[tuple[Any, ...]]:
    for (key_id, period), (r, p, c, n) in totals.items():
        yield key_id, period, r, p, c, n / NANO


def persistence_problems(client: SyncClient) -> list[str]:
    """What would make Redis lose or evict tenant keys and spend (empty: nothing)."""
    try:
        config = _config(client)
    except redis.ResponseError:  # CONFIG disabled (a managed Redis): what INFO says
        info: dict[str, Any] = {**client.info("persistence"), **client.info("memory")}
        config = {
            "appendonly": "yes" if int(info.get("aof_enabled", 0)) else "no",
            "appendfsync": "everysec",
            "save": "unknown",
            "maxmemory-policy": str(info.get("maxmemory_policy", "noeviction")),
        }
    problems = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy}: Redis may evict tenant keys and their spend;"
            " set maxmemory-policy noeviction (or give the cache a Redis of its own,"
            " REDIS_CACHE_URL)"
        )
    if config.get("appendonly") != "yes":
        save = config.get("save", "")
        if not save:
            problems.append(
                'no persistence (appendonly no, save ""): a restart of Redis loses every'
                " tenant key and all spend; set appendonly yes and appendfsync everysec"
            )
        else:
            problems.append(
                f"RDB snapshots only (save {save}): a restart of Redis loses the keys' changes"
                " and spend since the last snapshot; appendonly yes with appendfsync everysec"
                " loses at most a second"
            )
    elif config.get("appendfsync") == "no":
        problems.append(
            "appendfsync no: a crash of Redis's host may lose about 30 s of spend;"
            " appendfsync everysec loses at most a second"
        )
    return problems


def _config(client: SyncClient) -> dict[str, str]:
    """CONFIG GET of what matters (on a cluster: the worst of its masters)."""
    found: dict[str, str] = {}
    for name in ("appendonly", "appendfsync", "save", "maxmemory-policy"):
        answer: Any = client.config_get(name)
        values = [answer] if name in answer else list(answer.values())
        for value in values:
            text = value.get(name) if isinstance(value, dict) else value
            text = text.decode() if isinstance(text, bytes) else str(text or "")
            bad = {"appendonly": "no", "appendfsync": "no", "save": "", "maxmemory-policy": None}
            if (
                name not in found
                or text == bad[name]
                or (name == "maxmemory-policy" and text != "noeviction")
            ):
                found[name] = text
    return found

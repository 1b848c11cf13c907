"""Live settings shared by every node: ``PUT /admin/config`` on one applies on all.

Each node keeps its live settings in its shared memory (``runtime.LiveSettings``: the
overrides document and a version its workers poll). The cluster keeps one more copy in
Redis: a hash with the overrides document, a version every change increments, and the
node that made it. The node agent's ``SettingsSync`` meets the two every ``INTERVAL_S``:

* a change made on this node (its region's version moved since the last meeting) is
  published: what changed (set or put back) is merged into the cluster's current
  document, checked against this node's settings, and written only if the cluster's
  version is still the one it read (``SETTINGS_V1``, compare-and-set); otherwise it is
  merged again at the next turn. So changes to different settings made at once on two
  nodes both hold, and for one setting the last write in Redis's order wins. A merge
  that cannot apply (``MAX_DELAY_MS`` below another node's ``INITIAL_DELAY_MS``) is not
  written: the node logs why and takes the cluster's document.
* a change made on another node (the cluster's version moved) is written into this
  node's region, whose workers apply it as they would a change made here; the rate of
  a provider whose ``_RPS`` changed moves in the node's bucket.

A node that joins, or rejoins after Redis was gone, takes the cluster's current settings
(a change it took while alone is replaced, and the log says so); when the cluster has
none yet, its own become the cluster's. The document expires ``SETTINGS_TTL_MS`` after
the last node stops renewing it, so a gateway stopped for longer starts again from its
environment, as a single node does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from aigateway.cluster.sync import Agent
from aigateway.config import ConfigError, Settings
from aigateway.runtime import LiveSettings, apply_overrides

__all__ = ("INTERVAL_S", "SETTINGS_TTL_MS", "SETTINGS_V1", "SettingsSync")

logger = logging.getLogger("aigateway.cluster")

INTERVAL_S: Final = 0.2
SETTINGS_TTL_MS: Final = 60_000

# v1. KEYS[1]: the settings hash. ARGV[1]: ttl ms; to publish, also ARGV[2]: the version
# it was merged onto, ARGV[3]: the document, ARGV[4]: this node's id. Renews the hash and
# answers {version, document, node}.
SETTINGS_V1: Final = """
local key = KEYS[1]
if ARGV[2] then
  local version = tonumber(redis.call('HGET', key, 'version') or '0')
  if version == tonumber(ARGV[2]) then
    local t = redis.call('TIME')
    redis.call('HSET', key, 'version', version + 1, 'document', ARGV[3],
               'node', ARGV[4], 'at', t[1])
  end
end
redis.call('PEXPIRE', key, ARGV[1])
return redis.call('HMGET', key, 'version', 'document', 'node')
"""

Overrides = dict[str, str]
#: Called with the node's settings before and after a document from the cluster.
OnChange = Callable[[Settings, Settings], None]


class SettingsSync:
    name = "settings"
    interval_s = INTERVAL_S

    def __init__(self, live: LiveSettings, on_change: OnChange | None = None) -> None:
        self.live = live
        self.on_change = on_change
        self.cluster_version: int | None = None  # None: (re)joining
        self.local_version = 0  # the region's version at the last meeting
        self.synced: Overrides = {}  # the document both held then
        self._script: Any = None

    async def tick(self, agent: Agent) -> None:
        if self._script is None:
            self.key = agent.keys.coordination_key("settings")
            self._script = agent.redis.register_script(SETTINGS_V1)
        version, overrides = self.live.snapshot()
        cluster_version, document = await self._exchange(agent)
        if self.cluster_version is not None and cluster_version < self.cluster_version:
            self.cluster_version = None  # Redis lost the document (restarted empty)
        if self.cluster_version is None:
            if cluster_version == 0 and overrides:  # nothing shared yet: this node's
                await self._publish(agent, overrides, 0, version, overrides)
            else:
                self._take(cluster_version, document, version, overrides, joining=True)
        elif version != self.local_version:
            merged = _merged(document, self.synced, overrides)
            try:
                apply_overrides(self.live.base, merged)
            except ConfigError as exc:
                logger.error("a live change of this node cannot join the cluster's: %s", exc)
                merged = document
            await self._publish(agent, merged, cluster_version, version, overrides)
        elif cluster_version != self.cluster_version:
            self._take(cluster_version, document, version, overrides)

    def redis_changed(self, up: bool) -> None:
        if not up:
            self.cluster_version = None  # on return: take the cluster's settings

    def close(self) -> None:
        self.live.close()

    # -- internals -----------------------------------------------------------------------

    async def _exchange(
        self, agent: Agent, publish: tuple[int, bytes] | None = None
    ) -> tuple[int, Overrides]:
        args: list[object] = [SETTINGS_TTL_MS]
        if publish is not None:
            args += [publish[0], publish[1], agent.node_id]
        raw = await agent.call(lambda: self._script(keys=[self.key], args=args))
        version, document = int(raw[0] or 0), raw[1]
        return version, orjson.loads(document) if document else {}

    async def _publish(
        self, agent: Agent, merged: Overrides, onto: int, version: int, overrides: Overrides
    ) -> None:
        document = orjson.dumps(merged)
        written, now = await self._exchange(agent, (onto, document))
        if written != onto + 1 or now != merged:
            return  # another node wrote first: merged again at the next turn
        self._take(written, merged, version, overrides)

    def _take(
        self,
        cluster_version: int,
        document: Overrides,
        version: int,
        overrides: Overrides,
        joining: bool = False,
    ) -> None:
        """Make ``document`` (the cluster's at ``cluster_version``) the node's too."""
        if document != overrides:
            try:
                written = self.live.adopt(document, version)
            except ConfigError as exc:
                logger.error("the cluster's live settings cannot apply here: %s", exc)
                written = version  # keep ours; try again when the cluster's change
            if written is None:
                return  # a change was made here meanwhile: published at the next turn
            if joining and version != self.local_version:
                logger.warning(
                    "live settings changed on this node while it was alone are replaced "
                    "by the cluster's (version %d)",
                    cluster_version,
                )
            logger.info("live settings version %d of the cluster applied", cluster_version)
            if self.on_change is not None and written != version:
                base = self.live.base
                self.on_change(apply_overrides(base, overrides), apply_overrides(base, document))
            version = written
        self.cluster_version, self.local_version, self.synced = cluster_version, version, document


def _merged(cluster: Mapping[str, str], synced: Mapping[str, str], ours: Overrides) -> Overrides:
    """The cluster's document with what changed here since ``synced`` (set or put back)."""
    merged = dict(cluster)
    for name in synced.keys() | ours.keys():
        if synced.get(name) != ours.get(name):
            if name in ours:
                merged[name] = ours[name]
            else:
                merged.pop(name, None)
    return merged

"""The node's view of the cluster, in a region of its shared memory.

The node agent (``agent``) is the only writer; every worker reads it: ``/health`` says
``degraded`` with the reason while Redis is down, ``/metrics`` exports ``redis_up`` and
``cluster_nodes``, and the limits fall back to the limit divided by ``nodes`` (the last
number of live nodes seen) while Redis is gone.

A reader never sees half a write: the writer makes ``sequence`` odd, writes, makes it even
again, and a reader that saw it odd or changed reads again (a seqlock).

Region layout (``REGION``)::

{layout}
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Final

from aigateway.shm_layout import Buffer, Field, Layout

__all__ = ("LAYOUTS", "REGION", "REGION_NAME", "ClusterState", "ClusterView")

REGION_NAME: Final = "cluster"
OFF, UP, DOWN = 0, 1, 2
_MODES: Final = {OFF: "off", UP: "up", DOWN: "down"}
_TEXT: Final = 200
_ID: Final = 64

REGION: Final = Layout(
    "cluster state",
    (
        Field("sequence", "u64", doc="odd while being written"),
        Field("redis", "u32", doc="0 off (no REDIS_URL), 1 up, 2 down"),
        Field("nodes", "u32", doc="live nodes last seen, this one included"),
        Field("since", "f64", doc="when redis last changed (wall)"),
        Field("heartbeat", "f64", doc="the agent's last round (wall)"),
        Field("reason", "bytes", _TEXT, doc="why redis is down (UTF-8, NUL-padded)"),
        Field("node_id", "bytes", _ID, doc="this node's id"),
    ),
)
LAYOUTS: Final = (REGION,)
_REDIS_FIELD: Final = struct.Struct("<I")  # the u32 "redis", read alone
_REDIS_AT: Final = REGION.offset_of("redis")
__doc__ = __doc__.format(layout=REGION.describe("    "))


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent reading of the region."""

    redis: str  # off, up or down
    nodes: int
    since: float
    heartbeat: float
    reason: str
    node_id: str

    @property
    def enabled(self) -> bool:
        return self.redis != "off"

    @property
    def degraded(self) -> bool:
        return self.redis == "down"


class ClusterState:
    """The region, over ``buffer`` (a slice of the node's segment, or private bytes)."""

    SIZE: Final = REGION.size

    def __init__(self, buffer: Buffer) -> None:
        self._view = memoryview(buffer).cast("B")[: REGION.size]

    @classmethod
    def private(cls) -> ClusterState:
        return cls(bytearray(REGION.size))

    @property
    def degraded(self) -> bool:
        """Whether Redis is down: one aligned word, no seqlock (the request path asks)."""
        return bool(_REDIS_FIELD.unpack_from(self._view, _REDIS_AT)[0] == DOWN)

    def read(self) -> ClusterView:
        for _ in range(1000):
            values = REGION.struct.unpack_from(self._view, 0)
            sequence = values[0]
            if sequence % 2 == 0 and REGION.read(self._view, "sequence") == sequence:
                break
            time.sleep(0.00001)
        _, redis, nodes, since, heartbeat, reason, node_id = values
        return ClusterView(
            _MODES.get(redis, "off"),
            nodes,
            since,
            heartbeat,
            reason.rstrip(b"\0").decode(errors="replace"),
            node_id.rstrip(b"\0").decode(errors="replace"),
        )

    def write(
        self,
        *,
        redis: str | None = None,
        nodes: int | None = None,
        reason: str | None = None,
        node_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """Change the given fields (the agent's, one writer: no lock needed)."""
        wall = time.time() if now is None else now
        current = self.read()
        sequence = REGION.read(self._view, "sequence")
        mode = {v: k for k, v in _MODES.items()}[redis or current.redis]
        since = wall if redis is not None and redis != current.redis else current.since
        values = (
            sequence + 1,
            mode,
            current.nodes if nodes is None else nodes,
            since,
            wall,
            _text(current.reason if reason is None else reason, _TEXT),
            _text(current.node_id if node_id is None else node_id, _ID),
        )
        REGION.write(self._view, "sequence", sequence + 1)
        REGION.struct.pack_into(self._view, 0, *values)
        REGION.write(self._view, "sequence", sequence + 2)

    def close(self) -> None:
        self._view.release()


def _text(value: str, size: int) -> bytes:
    data = value.encode()[:size]
    return data.decode(errors="ignore").encode()  # never half a character

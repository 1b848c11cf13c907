"""The node's leases of the cluster's provider limits, as its workers see them.

The node agent's lease sync (``leases``) is the only writer; every worker reads it: the
metrics (each provider's share and the tokens leased), and whether a provider's calls
are refused because its limit fails closed while Redis is gone (read only when a
request finds no token at once, never on the fast path).

One writer, and each reader takes each value as it is: a reader may see one row's share
from one round and its total from the next, which is fine for what they are (figures,
and a mode that is one 32-bit word).

Region layout: a head (``HEAD``), then one row (``ROW``) per provider, in the order of
the region's ``providers`` parameter::

{layout}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from aigateway.shm_layout import Buffer, Field, Layout

__all__ = ("HEAD", "MODES", "REGION_NAME", "ROW", "LeaseBoard", "LeaseRow")

REGION_NAME: Final = "leases"
OFF, LEASED, ALONE, CLOSED = 0, 1, 2, 3
#: What ``mode`` says: no cluster limit; leased from Redis; alone (Redis gone: the limit
#: divided by the live nodes last seen); closed (Redis gone: calls refused).
MODES: Final = {OFF: "off", LEASED: "leased", ALONE: "alone", CLOSED: "closed"}

HEAD: Final = Layout(
    "leases head",
    (
        Field("calls", "u64", doc="lease scripts the agent ran (Redis calls for limits)"),
        Field("reserved", "u64", doc="zero"),
    ),
)
ROW: Final = Layout(
    "lease row",
    (
        Field("mode", "u32", doc="0 off, 1 leased, 2 alone (Redis gone, open), 3 closed"),
        Field("pad", "u32", doc="zero"),
        Field("share", "f64", doc="the node's rate now (requests/s): what its bucket refills at"),
        Field("limit", "f64", doc="the provider's limit for the whole cluster (requests/s)"),
        Field("leased", "f64", doc="tokens leased from the cluster's bucket, in total"),
    ),
)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    mode: str
    share: float
    limit: float
    leased: float


class LeaseBoard:
    """The region over ``buffer`` (a slice of the node's segment, or private bytes)."""

    LAYOUTS: ClassVar[tuple[Layout, ...]] = (HEAD, ROW)

    def __init__(self, buffer: Buffer, providers: list[str] | tuple[str, ...]) -> None:
        need = self.size(len(providers))
        view = memoryview(buffer).cast("B")
        if len(view) < need:
            raise ValueError(f"the leases region needs {need} bytes, it has {len(view)}")
        self._view = view[:need]
        self.providers = tuple(providers)
        self._at = {name: HEAD.size + ROW.size * i for i, name in enumerate(providers)}

    @staticmethod
    def size(providers: int) -> int:
        return HEAD.size + ROW.size * max(providers, 1)

    @classmethod
    def private(cls, providers: list[str] | tuple[str, ...]) -> LeaseBoard:
        return cls(bytearray(cls.size(len(providers))), providers)

    # -- the agent writes ------------------------------------------------------------------

    def write(self, provider: str, mode: int, share: float, limit: float, leased: float) -> None:
        at = self._at.get(provider)
        if at is not None:
            ROW.struct.pack_into(self._view, at, mode, 0, share, limit, leased)

    def add_call(self) -> None:
        HEAD.write(self._view, "calls", HEAD.read(self._view, "calls") + 1)

    # -- every worker reads -----------------------------------------------------------------

    def row(self, provider: str) -> LeaseRow | None:
        at = self._at.get(provider)
        if at is None:
            return None
        mode, _, share, limit, leased = ROW.struct.unpack_from(self._view, at)
        return LeaseRow(MODES.get(mode, "off"), share, limit, leased)

    def closed(self, provider: str) -> bool:
        """Whether the provider's calls are refused (its limit fails closed now)."""
        at = self._at.get(provider)
        return at is not None and ROW.read(self._view, "mode", at) == CLOSED

    @property
    def calls(self) -> int:
        return int(HEAD.read(self._view, "calls"))

    def close(self) -> None:
        self._view.release()


__doc__ = __doc__.format(layout=HEAD.describe("    ") + "\n\n" + ROW.describe("    "))

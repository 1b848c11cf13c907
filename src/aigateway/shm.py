"""The node's shared-memory segment: node-wide token buckets, stats and the raw regions
of the node's other shared structures, for every worker.

``aigateway serve`` (the main process) lays the segment out before Granian starts its
workers and removes it when the server stops; each worker attaches to it in its lifespan,
by the name the main process put in the settings it hands the workers (``shm_name``;
without a name, ``attach_segment`` reads the ``AIGATEWAY_SHM`` environment variable)::

    # main process                                   # each worker (lifespan)
    clean_stale_segments()                           segment = attach_segment(
    segment = create_segment(node.node_layout(s))        settings.shm_name)
    s = replace(s, shm_name=segment.name)            bucket = segment.bucket("openai")
    try:                                             stats = segment.stats()
        server.serve()                               ...
    finally:                                         segment.close()
        segment.close(); segment.unlink()

The segment is a file in ``/dev/shm`` (the shared-memory file system; the temporary
directory where there is none) named ``aigateway-<pid of the main process>``, mapped with
``mmap``.  It does not go through ``multiprocessing.shared_memory``, whose resource tracker
would unlink a segment when the first process using it exits.  A main process that
crashed leaves its segment behind: ``clean_stale_segments`` removes the segments (and the
pure twins' lock files) of servers whose pid is no longer alive, and never touches one of
a live process.  (Pids are those of this pid namespace: two containers sharing one
``/dev/shm`` must also share a pid namespace.)

Layout: a header (``HEADER``), a JSON directory of the regions, then the regions, each
64-byte aligned (``aigateway.hotpath.regions`` declares the bucket and stats layouts).
Besides buckets and stats, a layout may name *raw regions* (``RegionSpec``): zeroed bytes
that a structure of its own lays out and declares (``aigateway.stats.series``,
``aigateway.core.health``, ``aigateway.runtime``), with JSON parameters and a lock file of
their own::

    0    bytes[8]  magic             b"AIGWSHM1"
    8    u32       version           format version (1)
    12   u32       directory_length  bytes of the directory (UTF-8 JSON) that follows
    16   i64       creator_pid       pid of the creating process
    24   u64       size              total size in bytes
    32   (end)
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import struct
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from aigateway.hotpath import SharedStats, StatsSchema, TokenBucket
from aigateway.hotpath.regions import BUCKET, LOCK_DIR, STATS_HEADER, lock_path, pid_alive
from aigateway.shm_layout import Field, Layout, fingerprint
from aigateway.stats.registry import stats_schema

if TYPE_CHECKING:
    from aigateway.config import Settings

__all__ = (
    "HEADER",
    "SHM_DIR",
    "SHM_ENV",
    "BucketSpec",
    "NodeLayout",
    "RegionSpec",
    "Segment",
    "attach_segment",
    "clean_stale_segments",
    "create_segment",
    "node_layout",
    "provider_bucket",
    "segment_name",
)

SHM_ENV: Final = "AIGATEWAY_SHM"
SHM_DIR: Final = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()

_MAGIC = b"AIGWSHM1"
_VERSION = 1
HEADER: Final = Layout(
    "segment header",
    (
        Field("magic", "bytes", 8, doc='b"AIGWSHM1"'),
        Field("version", "u32", doc="format version (1)"),
        Field("directory_length", "u32", doc="bytes of the directory (UTF-8 JSON) that follows"),
        Field("creator_pid", "i64", doc="pid of the creating process"),
        Field("size", "u64", doc="total size in bytes"),
    ),
)
_HEADER = HEADER.struct
_ALIGN = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")
# A segment or lock file of the server whose main process has the pid in the name.
_OWNED = re.compile(r"aigateway-([0-9]+)(?:\..*)?\Z")


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A node-wide token bucket: its name (a provider's, say), rate and burst."""

    name: str
    rate_per_s: float
    burst: float


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """A raw region: ``size`` zeroed bytes that a structure of its own lays out.

    ``params`` (JSON-able) are kept in the segment's directory for the processes that
    attach, with the fingerprint of the ``layouts`` the structure declares (checked by
    ``Segment.region``); each region also gets a lock file of its own
    (``Segment.region_lock_path``).
    """

    name: str
    size: int
    params: Mapping[str, Any] = field(default_factory=dict)
    layouts: tuple[Layout, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """What the segment holds: token buckets by name, stats with one slot per worker, and
    raw regions by name."""

    buckets: tuple[BucketSpec, ...] = ()
    stats: StatsSchema | None = None
    stats_slots: int = 0
    regions: tuple[RegionSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [bucket.name for bucket in self.buckets]
        if len(set(names)) != len(names):
            raise ValueError("NodeLayout: bucket names must be unique")
        if self.stats is not None and self.stats_slots < 1:
            raise ValueError("NodeLayout: stats need at least one slot")
        regions = [region.name for region in self.regions]
        if len(set(regions)) != len(regions):
            raise ValueError("NodeLayout: region names must be unique")
        if any(region.size < 1 for region in self.regions):
            raise ValueError("NodeLayout: a region needs at least one byte")


def node_layout(settings: Settings, stats: StatsSchema | None = None) -> NodeLayout:
    """The gateway's layout: one bucket per provider (``<NAME>_RPS``, a burst of one
    second's worth, at least 1), and stats slots for twice the workers (a respawned or
    reloaded worker takes a new slot while the old one may still be alive) plus two.

    ``stats`` defaults to the schema the metric registry declares for these providers."""
    buckets = tuple(provider_bucket(provider.name, provider.rps) for provider in settings.providers)
    if stats is None:
        stats = stats_schema([provider.name for provider in settings.providers])
    return NodeLayout(buckets, stats, 2 * settings.workers + 2)


def provider_bucket(name: str, rps: float) -> BucketSpec:
    """A provider's rate bucket: ``rps`` a second with a burst of one second's worth (>= 1).

    Also the rule when the rate changes live (``PUT /admin/config``)."""
    return BucketSpec(name, rps, max(1.0, rps))


def segment_name(pid: int | None = None) -> str:
    """The name of the segment of the server whose main process is ``pid`` (default: us)."""
    return f"aigateway-{os.getpid() if pid is None else pid}"


def _lock_of(mapping: mmap.mmap, layout: Layout, at: int) -> str:
    """The lock file of the hot-path region (``layout``) at byte ``at`` of the mapping."""
    return lock_path(layout.read(mapping, "creator_pid", at), layout.read(mapping, "region_id", at))


def _round_up(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


class Segment:
    """One mapping of a node's segment; ``close()`` it, and ``unlink()`` in its creator."""

    def __init__(self, name: str, mapping: mmap.mmap) -> None:
        magic, version, length, creator_pid, size = _HEADER.unpack_from(mapping, 0)
        if magic != _MAGIC or version != _VERSION or size != len(mapping):
            raise ValueError(f"{name} is not an aigateway shared-memory segment (version 1)")
        self.name = name
        self.path = os.path.join(SHM_DIR, name)
        self.creator_pid: int = creator_pid
        self.size: int = size
        self._directory: dict[str, Any] = json.loads(mapping[_HEADER.size : _HEADER.size + length])
        # The pure twins' lock files of the regions, named after each region's header.
        locks = [
            _lock_of(mapping, BUCKET, e["offset"]) for e in self._directory["buckets"].values()
        ]
        if self._directory["stats"] is not None:
            locks.append(_lock_of(mapping, STATS_HEADER, self._directory["stats"]["offset"]))
        locks += [lock_path(creator_pid, entry["id"]) for entry in self._regions().values()]
        self.lock_paths: tuple[str, ...] = tuple(locks)
        #: When the segment was made (``time.time()``): the node's start.
        self.created_at: float = float(self._directory.get("created", 0.0))
        self._handed_out: list[TokenBucket | SharedStats] = []
        self._mmap = mapping
        self.buffer = memoryview(mapping)  # last: a failed __init__ leaves no export behind

    @property
    def bucket_names(self) -> tuple[str, ...]:
        return tuple(self._directory["buckets"])

    @property
    def stats_schema(self) -> StatsSchema | None:
        stats = self._directory["stats"]
        return None if stats is None else StatsSchema.from_json(stats["schema"])

    def bucket_region(self, name: str) -> memoryview:
        """The bytes of bucket ``name`` (``KeyError`` if the layout has none)."""
        try:
            offset = self._directory["buckets"][name]["offset"]
        except KeyError:
            raise KeyError(f"the shared-memory segment has no bucket named {name!r}") from None
        return self.buffer[offset : offset + BUCKET.size]

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(self._regions())

    def region(self, name: str, *layouts: Layout) -> memoryview:
        """The bytes of raw region ``name`` (``KeyError`` if the layout has none).

        With ``layouts``, ``ValueError`` unless the region was laid out for the same
        declarations (a process of another build must not misread it)."""
        entry = self._region_entry(name)
        if layouts and entry.get("layout") != fingerprint(*layouts):
            raise ValueError(
                f"the shared-memory region {name!r} was laid out for other declarations "
                "(another version of aigateway): restart the server"
            )
        return self.buffer[entry["offset"] : entry["offset"] + entry["size"]]

    def region_params(self, name: str) -> dict[str, Any]:
        """The parameters region ``name`` was laid out with."""
        return dict(self._region_entry(name)["params"])

    def region_lock_path(self, name: str) -> str:
        """The lock file of region ``name``, removed with the segment."""
        return lock_path(self.creator_pid, self._region_entry(name)["id"])

    def _regions(self) -> dict[str, Any]:
        regions: dict[str, Any] = self._directory.get("regions", {})
        return regions

    def _region_entry(self, name: str) -> dict[str, Any]:
        try:
            entry: dict[str, Any] = self._regions()[name]
        except KeyError:
            raise KeyError(f"the shared-memory segment has no region named {name!r}") from None
        return entry

    def stats_region(self) -> memoryview:
        """The bytes of the stats (``LookupError`` if the layout has none)."""
        region = self._directory["stats"]
        if region is None:
            raise LookupError("the shared-memory segment holds no stats")
        return self.buffer[region["offset"] : region["offset"] + region["size"]]

    def bucket(self, name: str) -> TokenBucket:
        """The node-wide bucket ``name``, closed with the segment."""
        bucket = TokenBucket.attach(self.bucket_region(name))
        self._handed_out.append(bucket)
        return bucket

    def stats(self, schema: StatsSchema | None = None) -> SharedStats:
        """The node's stats through a slot claimed for this process, closed with the segment.

        ``schema`` defaults to the one the segment was laid out with; another one must be
        equal to it.
        """
        region = self.stats_region()
        stored = self.stats_schema
        assert stored is not None
        if schema is not None and schema.fingerprint != stored.fingerprint:
            raise ValueError("the segment's stats were laid out for another schema")
        stats = SharedStats(schema or stored, region)
        self._handed_out.append(stats)
        return stats

    def close(self) -> None:
        """Unmap the segment, closing the buckets and stats this object handed out first."""
        for handed_out in self._handed_out:
            handed_out.close()
        self._handed_out.clear()
        self.buffer.release()
        try:
            self._mmap.close()
        except BufferError:
            raise BufferError(
                "the shared-memory segment is still in use: close() the TokenBucket and "
                "SharedStats objects made from Segment.buffer before the segment"
            ) from None

    def unlink(self) -> None:
        """Remove the segment's name (mappings stay valid until closed) and its lock files."""
        for path in (self.path, *self.lock_paths):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __enter__(self) -> Segment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Segment {self.name} ({self.size} bytes)>"


def create_segment(layout: NodeLayout, name: str | None = None) -> Segment:
    """Create, lay out and map a new segment (in the main process, before the workers).

    ``name`` defaults to ``segment_name()``.  A segment left under that name can only come
    from a dead process that had our pid (or from this process): it is replaced.
    """
    name = segment_name() if name is None else name
    if not _NAME.match(name):
        raise ValueError(f"invalid shared-memory segment name {name!r}")
    stats_size = 0
    if layout.stats is not None:
        stats_size = SharedStats.buffer_size(layout.stats, layout.stats_slots)
    ids = [int.from_bytes(os.urandom(6), "little") for _ in layout.regions]
    created = time.time()
    # The regions follow the directory, whose length depends on their offsets: measure it
    # with offsets wider than any real one, then fill the real ones in.
    wide = [10**15] * (len(layout.buckets) + 1 + len(layout.regions))
    directory = _directory(layout, stats_size, wide, ids, created)
    offset = start = _round_up(_HEADER.size + len(directory))
    offsets = []
    for _ in layout.buckets:
        offsets.append(offset)
        offset += _round_up(BUCKET.size)
    offsets.append(offset)
    offset += _round_up(stats_size)
    for raw in layout.regions:
        offsets.append(offset)
        offset += _round_up(raw.size)
    size = offset
    directory = _directory(layout, stats_size, offsets, ids, created)
    assert _HEADER.size + len(directory) <= start

    path = os.path.join(SHM_DIR, name)
    if name == segment_name():
        _remove_leftover(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    try:
        view = memoryview(mapping)
        try:
            for spec, at in zip(layout.buckets, offsets, strict=False):
                region = view[at : at + BUCKET.size]
                TokenBucket(spec.rate_per_s, spec.burst, region).close()
            if layout.stats is not None:
                at = offsets[len(layout.buckets)]
                SharedStats.initialise(view[at : at + stats_size], layout.stats, layout.stats_slots)
            view[_HEADER.size : _HEADER.size + len(directory)] = directory
            # The header last: a segment with a valid magic is complete.
            _HEADER.pack_into(view, 0, _MAGIC, _VERSION, len(directory), os.getpid(), size)
        finally:
            view.release()
    except BaseException:
        mapping.close()
        os.unlink(path)
        raise
    return Segment(name, mapping)


def _remove_leftover(name: str) -> None:
    """Remove a segment left under ``name``, with its lock files when it can be read."""
    try:
        leftover = attach_segment(name)
    except FileNotFoundError:
        return
    except (ValueError, KeyError, TypeError, OSError, struct.error):  # unreadable: the name only
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))
        return
    leftover.close()
    leftover.unlink()


def _directory(
    layout: NodeLayout, stats_size: int, offsets: list[int], ids: list[int], created: float
) -> bytes:
    stats = None
    count = len(layout.buckets)
    if layout.stats is not None:
        stats = {
            "offset": offsets[count],
            "size": stats_size,
            "slots": layout.stats_slots,
            "schema": layout.stats.to_json(),
        }
    buckets = {spec.name: {"offset": at} for spec, at in zip(layout.buckets, offsets, strict=False)}
    regions = {
        spec.name: {
            "offset": at,
            "size": spec.size,
            "id": id_,
            "params": dict(spec.params),
            "layout": fingerprint(*spec.layouts) if spec.layouts else None,
        }
        for spec, at, id_ in zip(layout.regions, offsets[count + 1 :], ids, strict=True)
    }
    document = {"buckets": buckets, "stats": stats, "regions": regions, "created": created}
    return json.dumps(document, separators=(",", ":")).encode()


def attach_segment(name: str | None = None) -> Segment:
    """Map the segment ``name`` (default: the one named in ``AIGATEWAY_SHM``)."""
    if name is None:
        name = os.environ.get(SHM_ENV, "")
        if not name:
            raise LookupError(f"{SHM_ENV} is not set: no shared-memory segment to attach to")
    if not _NAME.match(name):
        raise ValueError(f"invalid shared-memory segment name {name!r}")
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER.size:
            raise ValueError(f"{name} is not an aigateway shared-memory segment")
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    try:
        return Segment(name, mapping)
    except BaseException:
        mapping.close()
        raise


def clean_stale_segments(directory: str | None = None) -> list[str]:
    """Remove the segments and lock files of servers whose main process is gone.

    Returns the paths removed.  Files of live processes are never touched.
    """
    removed = []
    for folder in sorted({SHM_DIR, LOCK_DIR} if directory is None else {directory}):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for entry in names:
            match = _OWNED.match(entry)
            if match is None or pid_alive(int(match.group(1))):
                continue
            path = os.path.join(folder, entry)
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            else:
                removed.append(path)
    return removed

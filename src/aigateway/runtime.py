"""Live settings: changed with ``PUT /admin/config``, applied by every worker within a second.

The settings that are safe to change while the gateway runs (``LIVE_VARIABLES``: a few of
the node's, and ``<PREFIX>_RPS`` and ``<PREFIX>_MAX_CONNS`` of each built-in provider; plus
``providers.<name>.rps`` and ``providers.<name>.max_connections`` of any provider) are
validated with the parsers of ``config.variables``, so a bad value gets the same clear
message as at startup, and nothing changes unless every value is good.

The changes live in a region of the node's shared memory: the overrides (variable ->
raw value) as JSON, and a version.  The worker that takes a change writes them (under the
region's lock); every worker polls the version every ``POLL_S`` and, when it moved,
rebuilds its settings from the startup ones plus the overrides and applies them, then
acknowledges the version in its slot.  Each subsystem subscribes its own handler for the
settings it owns (``subscribe(cache.apply_settings)``), so a new live setting touches the
subsystem that uses it and nothing else; a handler of state the workers share (the rate
buckets) subscribes ``node_wide`` and runs once, in the worker that took the change.  A worker that
starts (or is respawned) applies the current overrides before it serves.  Changes last
until the server stops: the environment still rules the next start.

Region layout: a head (``HEAD``), one slot per worker (``SLOT``, ``params["slots"]`` of
them), then the JSON document, at most ``MAX_DOCUMENT`` bytes::

    0    u64  sequence  odd while being written
    8    u64  version
    16   u32  length    bytes of the JSON document
    24   f64  changed   time of the last change (wall)
    64   (end)

    0    i64  pid      the worker's (0: free)
    8    u64  version  the last version it applied
    16   (end)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import orjson

from aigateway.config import (
    ConfigError,
    ProviderSettings,
    Settings,
    _int,
    _number,
    describe,
    variables,
)
from aigateway.errors import InvalidRequest
from aigateway.hotpath.regions import RegionLock, pid_alive
from aigateway.provider_specs import BUILT_IN, ProviderSpec
from aigateway.shm_layout import Field, Layout

logger = logging.getLogger("aigateway.runtime")

__all__ = (
    "LIVE_VARIABLES",
    "LiveSettings",
    "apply_overrides",
    "normalize_changes",
    "read_overrides",
)

_NODE_LIVE_VARIABLES: Final = (
    "LOG_LEVEL",
    "CACHE_TTL_MINUTES",
    "CACHE_PROVIDER_TTL_FACTORS",
    "QUEUE_SIZE",
    "PRIORITY_RESERVES",  # when admission has it
    "MAX_RETRIES",
    "INITIAL_DELAY_MS",
    "MAX_DELAY_MS",
)
PROVIDER_FIELDS: Final = {
    "rps": ("rps", _number(0, strict=True)),
    "max_connections": ("max_connections", _int(1, 10000)),
}
PROVIDER_NAMES: Final = ("providers.<name>.rps", "providers.<name>.max_connections")
POLL_S: Final = 0.2
MAX_DOCUMENT: Final = 64 * 1024
HEAD: Final = Layout(
    "live settings",
    (
        Field("sequence", "u64", doc="odd while being written"),
        Field("version", "u64"),
        Field("length", "u32", doc="bytes of the JSON document"),
        Field("changed", "f64", doc="time of the last change (wall)"),
    ),
    size=64,
)
SLOT: Final = Layout(
    "live settings slot",
    (
        Field("pid", "i64", doc="the worker's (0: free)"),
        Field("version", "u64", doc="the last version it applied"),
    ),
)
_HEAD = HEAD.struct
_SLOT = SLOT.struct
_SLOTS_AT = HEAD.size

Applier = Callable[[Settings, Settings], None]


def live_variables(specs: tuple[ProviderSpec, ...] = BUILT_IN) -> tuple[str, ...]:
    """The variables that may change live on a gateway whose built-in providers are
    ``specs``."""
    providers = (v for spec in specs for v in (spec.rps_variable, spec.max_connections_variable))
    return (*_NODE_LIVE_VARIABLES, *providers)


LIVE_VARIABLES: Final = live_variables(BUILT_IN)


def _variables(settings: Settings) -> dict[str, tuple[str, Callable[[str, str], Any]]]:
    known = {name: (path, parse) for name, path, parse, _ in variables(settings.specs)}
    return {name: known[name] for name in live_variables(settings.specs) if name in known}


def region_size(slots: int) -> int:
    return _SLOTS_AT + _SLOT.size * slots + MAX_DOCUMENT


def _raw(name: str, value: Any) -> str:
    """A JSON value as the text an environment variable would hold."""
    if isinstance(value, bool) or value is None or isinstance(value, list):
        raise InvalidRequest(
            f"invalid {name}: expected a string or a number", param=name, code="invalid_config"
        )
    if isinstance(value, dict):
        if name not in MAPPING_VARIABLES:
            raise InvalidRequest(
                f"invalid {name}: expected a string or a number", param=name, code="invalid_config"
            )
        return ",".join(f"{key}={item}" for key, item in value.items())
    return str(value)


# Live settings whose value may be sent as a JSON object: {"google": 0.5}.
MAPPING_VARIABLES = frozenset({"CACHE_PROVIDER_TTL_FACTORS"})


def normalize_changes(settings: Settings, changes: Any) -> dict[str, str | None]:
    """Canonical names and raw values of a PUT body (``None``: back to the startup value).

    Raises ``InvalidRequest`` for a name that cannot change live or a value of no use.
    """
    if not isinstance(changes, dict) or not changes:
        raise InvalidRequest(
            'send a JSON object of settings to change, e.g. {"OPENAI_RPS": 20}',
            code="invalid_config",
        )
    live_names = _variables(settings)
    names = {p.name for p in settings.providers}
    specs = {spec.name: spec for spec in settings.specs}
    result: dict[str, str | None] = {}
    for name, value in changes.items():
        canonical = name
        prefix, _, rest = name.partition(".")
        provider, _, attribute = rest.partition(".")
        if prefix == "providers" and provider in names and attribute in PROVIDER_FIELDS:
            spec = specs.get(provider)
            if spec is not None:  # a built-in provider: its variable's name
                rps = attribute == "rps"
                canonical = spec.rps_variable if rps else spec.max_connections_variable
        elif name not in live_names:
            live = ", ".join([*live_names, *PROVIDER_NAMES])
            raise InvalidRequest(
                f"{name} cannot be changed while the gateway runs; these can: {live}",
                param=name,
                code="not_live",
            )
        result[canonical] = None if value is None else _raw(name, value)
    return result


def apply_overrides(base: Settings, overrides: Mapping[str, str]) -> Settings:
    """``base`` with the overrides parsed and applied; ``ConfigError`` for a bad one."""
    live_names = _variables(base)
    top: dict[str, Any] = {}
    providers: dict[str, dict[str, Any]] = {}
    for name, raw in overrides.items():
        if name in live_names:
            path, parse = live_names[name]
            value = parse(name, raw)
            if "." in path:
                provider, attribute = path.split(".", 1)
                providers.setdefault(provider, {})[attribute] = value
            else:
                top[path] = value
            continue
        _, provider, attribute = name.split(".", 2)
        field, parse = PROVIDER_FIELDS[attribute]
        providers.setdefault(provider, {})[field] = parse(name, raw)
    settings = dataclasses.replace(base, **top).with_providers(providers)
    if settings.max_delay_ms < settings.initial_delay_ms:
        raise ConfigError(
            "MAX_DELAY_MS",
            str(settings.max_delay_ms),
            f"a value >= INITIAL_DELAY_MS ({settings.initial_delay_ms})",
        )
    return settings


def effective(settings: Settings, overrides: Mapping[str, str]) -> dict[str, Any]:
    """What ``GET /admin/config`` shows: every setting (secrets masked), the providers of
    the configuration file, what may change live, and what did."""
    providers: dict[str, ProviderSettings] = {p.name: p for p in settings.providers}
    return {
        "settings": dict(describe(settings)),
        "providers": {
            name: {
                "type": p.kind,
                "base_url": p.base_url,
                "rps": p.rps,
                "max_connections": p.max_connections,
                "key_configured": bool(p.api_key),
            }
            for name, p in providers.items()
        },
        "live": [*_variables(settings), *PROVIDER_NAMES],
        "overrides": dict(overrides),
    }


def read_overrides(region: memoryview | bytearray, slots: int) -> tuple[int, dict[str, str]] | None:
    """(version, overrides) of the node's live settings, read without taking a worker's
    slot (the node agent's view: it follows live limits). A write in progress is waited
    for; one that never ends (its writer died) reads as ``None``."""
    view = memoryview(region)
    start = _SLOTS_AT + _SLOT.size * slots
    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:
        sequence, version, length, _ = _HEAD.unpack_from(view, 0)
        raw = bytes(view[start : start + length])
        if not sequence % 2 and _HEAD.unpack_from(view, 0)[0] == sequence:
            return version, (orjson.loads(raw) if raw else {})
        time.sleep(0.0001)
    return None


class LiveSettings:
    """This worker's view of the node's live settings."""

    #: What the region is laid out by (``shm.RegionSpec.layouts``).
    LAYOUTS: ClassVar[tuple[Layout, ...]] = (HEAD, SLOT)

    def __init__(
        self,
        base: Settings,
        region: memoryview | bytearray,
        slots: int,
        lock_path: str | None = None,
        *,
        claim_slot: bool = True,
    ) -> None:
        """``claim_slot=False``: a reader and writer of the node's document that applies
        nothing (the node agent's), so no worker waits for its acknowledgement."""
        self.base = base
        self.current = base
        self._view = memoryview(region)[: region_size(slots)]
        self._slots = slots
        self._lock = RegionLock(lock_path)
        self._appliers: list[Applier] = []
        self._node_appliers: list[Applier] = []
        self._applied = 0
        self._overrides: dict[str, str] = {}
        self._slot = self._claim() if claim_slot else -1

    @property
    def version(self) -> int:
        return int(_HEAD.unpack_from(self._view, 0)[1])

    @property
    def overrides(self) -> dict[str, str]:
        return dict(self._overrides)

    def subscribe(self, applier: Applier, *, node_wide: bool = False) -> None:
        """Call ``applier(old, new)`` in this worker whenever the settings change.

        ``node_wide``: only in the worker that takes a change (``update``), once for the
        node, for state the workers share (the rate buckets in shared memory)."""
        (self._node_appliers if node_wide else self._appliers).append(applier)

    def update(self, changes: Any) -> Settings:
        """Validate and publish a change for the node, and apply it here at once."""
        normalized = normalize_changes(self.current, changes)
        with self._lock:
            overrides = self._read()[1]
            for name, raw in normalized.items():
                if raw is None:
                    overrides.pop(name, None)
                else:
                    overrides[name] = raw
            try:
                apply_overrides(self.base, overrides)
            except ConfigError as exc:
                raise InvalidRequest(str(exc), param=exc.name, code="invalid_config") from None
            document = orjson.dumps(overrides)
            if len(document) > MAX_DOCUMENT:
                raise InvalidRequest("too many live changes", code="invalid_config")
            sequence, version, _, _ = _HEAD.unpack_from(self._view, 0)
            sequence += sequence % 2  # even, even after a writer that died half-way
            _HEAD.pack_into(self._view, 0, sequence + 1, version, 0, time.time())
            start = self.data_offset
            self._view[start : start + len(document)] = document
            _HEAD.pack_into(self._view, 0, sequence + 2, version + 1, len(document), time.time())
        old = self.current
        self.refresh()
        self._apply(self._node_appliers, old, self.current)
        return self.current

    def snapshot(self) -> tuple[int, dict[str, str]]:
        """The node's (version, overrides) as the region holds them now."""
        return self._read()

    def adopt(self, overrides: Mapping[str, str], expected_version: int) -> int | None:
        """Replace the node's overrides with ``overrides`` (the cluster's), unless the
        region moved past ``expected_version`` meanwhile (a change made here: ``None``);
        the new version. ``ConfigError`` for a document these settings cannot apply."""
        apply_overrides(self.base, overrides)
        document = orjson.dumps(dict(overrides))
        if len(document) > MAX_DOCUMENT:
            raise ConfigError("live settings", "(a document)", f"at most {MAX_DOCUMENT} bytes")
        with self._lock:
            sequence, version, _, _ = _HEAD.unpack_from(self._view, 0)
            if version != expected_version:
                return None
            sequence += sequence % 2
            _HEAD.pack_into(self._view, 0, sequence + 1, version, 0, time.time())
            start = self.data_offset
            self._view[start : start + len(document)] = document
            _HEAD.pack_into(self._view, 0, sequence + 2, version + 1, len(document), time.time())
        return int(version) + 1

    def refresh(self) -> bool:
        """Apply the node's live settings if they changed; whether they did."""
        version, overrides = self._read()
        if version == self._applied:
            return False
        old = self.current
        try:
            new = apply_overrides(self.base, overrides)
        except ConfigError as exc:  # cannot happen: they were validated before publishing
            logger.error("ignoring live settings: %s", exc)
            self._applied = version
            return False
        self.current, self._overrides, self._applied = new, overrides, version
        self._apply(self._appliers, old, new)
        self._ack(version)
        if version:
            logger.info("live settings version %d applied: %s", version, overrides)
        return True

    def acknowledged(self, version: int) -> tuple[int, int]:
        """(live workers that applied ``version`` or later, live workers)."""
        applied = alive = 0
        for slot in range(self._slots):
            pid, seen = _SLOT.unpack_from(self._view, _SLOTS_AT + _SLOT.size * slot)
            if pid and (pid == os.getpid() or pid_alive(pid)):
                alive += 1
                applied += seen >= version
        return applied, alive

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            self.refresh()

    def close(self) -> None:
        if self._slot >= 0:
            with self._lock:
                _SLOT.pack_into(self._view, _SLOTS_AT + _SLOT.size * self._slot, 0, 0)
            self._slot = -1
        self._lock.close()
        self._view.release()

    # -- internals -----------------------------------------------------------------------

    @property
    def data_offset(self) -> int:
        return _SLOTS_AT + _SLOT.size * self._slots

    def _read(self) -> tuple[int, dict[str, str]]:
        """A consistent (version, overrides), read again while a writer is at it."""
        deadline = time.monotonic() + 0.1
        while True:
            sequence, version, length, _ = _HEAD.unpack_from(self._view, 0)
            start = self.data_offset
            raw = bytes(self._view[start : start + length])
            if not sequence % 2 and _HEAD.unpack_from(self._view, 0)[0] == sequence:
                return version, (orjson.loads(raw) if raw else {})
            if time.monotonic() > deadline:
                return self._applied, dict(self._overrides)  # a writer died mid-write
            time.sleep(0.0001)

    @staticmethod
    def _apply(appliers: list[Applier], old: Settings, new: Settings) -> None:
        for applier in appliers:
            try:
                applier(old, new)
            except Exception:  # one subsystem's failure must not keep the change from others
                logger.exception("applying live settings failed")

    def _ack(self, version: int) -> None:
        if self._slot >= 0:
            _SLOT.pack_into(self._view, _SLOTS_AT + _SLOT.size * self._slot, os.getpid(), version)

    def _claim(self) -> int:
        me = os.getpid()
        with self._lock:
            for slot in range(self._slots):
                at = _SLOTS_AT + _SLOT.size * slot
                pid, _ = _SLOT.unpack_from(self._view, at)
                if pid == 0 or (pid != me and not pid_alive(pid)):
                    _SLOT.pack_into(self._view, at, me, 0)
                    return slot
        return -1  # more processes than slots: this one is not counted in acknowledgements

"""Hot paths of the gateway, each in two interchangeable twins.

Every hot path exists as a pure-Python module (``_<name>_py.py``, the executable
specification) and as a Cython extension with the same names (``ext/_<name>_c.pyx``, built
into ``aigateway.hotpath._<name>_c``).  This module is the one place that picks: it
re-exports the compiled twins when they are built, and the pure ones when they are not or
when ``AIGATEWAY_NO_EXTENSIONS`` is set to anything but ``""`` or ``"0"``.  A compiled
module that is there but cannot be loaded is an error, never a silent fallback.  Type
checkers always see the pure twins.

``IMPLEMENTATION`` tells which was picked (``"cython"`` or ``"python"``) and ``load(name)``
returns either implementation by name, for tests and benchmarks.

To add a hot path: add its modules to ``_TWINS`` and its names to the three imports below.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Literal

# Data shared by both twins of a hot path (each twin re-exports them too).
from ._cache_key_py import BLOCK_EXCLUDED_FIELDS, EXCLUDED_FIELDS, MAX_DEPTH
from ._stats_schema import Histogram, HistogramSnapshot, StatsSchema, StatsSnapshot
from ._ttl_policy import DEFAULT_TTL_POLICY, TTLPolicy

__all__ = (
    "ATOMIC_BUDGET",
    "ATOMIC_WINDOW",
    "BLOCK_EXCLUDED_FIELDS",
    "DEFAULT_TTL_POLICY",
    "EXCLUDED_FIELDS",
    "IMPLEMENTATION",
    "MAX_DEPTH",
    "NO_EXTENSIONS",
    "BudgetWords",
    "CallWindow",
    "FlightTable",
    "Histogram",
    "HistogramSnapshot",
    "PriorityQueue",
    "SSEDecoder",
    "SharedStats",
    "StatsSchema",
    "StatsSnapshot",
    "TTLPolicy",
    "TokenBucket",
    "cache_key",
    "compute_ttl",
    "load",
)

NO_EXTENSIONS: bool = (
    os.environ.get("AIGATEWAY_NO_EXTENSIONS", "") not in ("", "0")
    or sys.implementation.name != "cpython"
)

# The module names of each implementation, in the same order (one entry per hot path).
_TWINS: dict[str, tuple[str, ...]] = {
    "python": (
        "_sse_py",
        "_cache_key_py",
        "_ttl_py",
        "_pqueue_py",
        "_bucket_py",
        "_stats_py",
        "_flights_py",
        "_window_py",
        "_budget_py",
    ),
    "cython": (
        "_sse_c",
        "_cache_key_c",
        "_ttl_c",
        "_pqueue_c",
        "_bucket_c",
        "_stats_c",
        "_flights_c",
        "_window_c",
        "_budget_c",
    ),
}

_COMPILED = frozenset(f"{__name__}.{module}" for module in _TWINS["cython"])

IMPLEMENTATION: Literal["cython", "python"]

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._bucket_py import TokenBucket
    from ._budget_py import ATOMIC_BUDGET, BudgetWords
    from ._cache_key_py import cache_key
    from ._flights_py import FlightTable
    from ._pqueue_py import PriorityQueue
    from ._sse_py import SSEDecoder
    from ._stats_py import SharedStats
    from ._ttl_py import compute_ttl
    from ._window_py import ATOMIC_WINDOW, CallWindow

    IMPLEMENTATION = "python"
else:
    try:
        from ._bucket_c import TokenBucket
        from ._budget_c import ATOMIC_BUDGET, BudgetWords
        from ._cache_key_c import cache_key
        from ._flights_c import FlightTable
        from ._pqueue_c import PriorityQueue
        from ._sse_c import SSEDecoder
        from ._stats_c import SharedStats
        from ._ttl_c import compute_ttl
        from ._window_c import ATOMIC_WINDOW, CallWindow
    except ModuleNotFoundError as exc:
        # Only a compiled module that is absent (not built, e.g. an editable checkout
        # without a compiler) falls back; one that is present but broken (a bad build, a
        # missing symbol or dependency) fails loudly, as in yarl and multidict.
        if exc.name not in _COMPILED:
            raise
        from ._bucket_py import TokenBucket
        from ._budget_py import ATOMIC_BUDGET, BudgetWords
        from ._cache_key_py import cache_key
        from ._flights_py import FlightTable
        from ._pqueue_py import PriorityQueue
        from ._sse_py import SSEDecoder
        from ._stats_py import SharedStats
        from ._ttl_py import compute_ttl
        from ._window_py import ATOMIC_WINDOW, CallWindow

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "cython"


@functools.cache
def load(name: str) -> types.ModuleType:
    """Return one implementation's hot-path names as a module-like namespace.

    ``load("python")`` always works; ``load("cython")`` raises ``ImportError`` when the
    extensions are not built (or are broken), whatever ``AIGATEWAY_NO_EXTENSIONS`` says.
    """
    try:
        modules = _TWINS[name]
    except KeyError:
        raise ValueError(
            f"unknown implementation {name!r}; expected one of {sorted(_TWINS)}"
        ) from None
    names: dict[str, object] = {"IMPLEMENTATION": name}
    for module_name in modules:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module_name}":
                raise  # present, but it needs something that is missing: say that
            raise ImportError(
                f"the {name} implementation of {__name__} is not available: "
                f"{__name__}.{module_name} cannot be imported ({exc}); build the extensions "
                "with `pip install -e . --no-build-isolation` (Cython and a C compiler needed)"
            ) from exc
        names.update((attr, getattr(module, attr)) for attr in module.__all__)
    namespace = types.ModuleType(f"{__name__}[{name}]")
    vars(namespace).update(names)
    return namespace

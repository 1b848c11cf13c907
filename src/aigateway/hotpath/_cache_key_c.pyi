# Type stub of the compiled twin built from ext/_cache_key_c.pyx; mirrors _cache_key_py.py.
from collections.abc import Mapping
from typing import Any

from ._cache_key_py import BLOCK_EXCLUDED_FIELDS as BLOCK_EXCLUDED_FIELDS
from ._cache_key_py import EXCLUDED_FIELDS as EXCLUDED_FIELDS
from ._cache_key_py import MAX_DEPTH as MAX_DEPTH

__all__ = ("BLOCK_EXCLUDED_FIELDS", "EXCLUDED_FIELDS", "MAX_DEPTH", "cache_key")

def cache_key(
    request: Mapping[str, Any],
    scope: str = "",
    *,
    provider: str = "",
    model: str | None = None,
) -> bytes: ...

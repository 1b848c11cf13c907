# Type stub of the compiled twin built from ext/_ttl_c.pyx; mirrors _ttl_py.py.
from collections.abc import Mapping
from typing import Any

from ._ttl_policy import DEFAULT_TTL_POLICY as DEFAULT_TTL_POLICY
from ._ttl_policy import TTLPolicy as TTLPolicy

__all__ = ("DEFAULT_TTL_POLICY", "TTLPolicy", "compute_ttl")

def compute_ttl(
    request: Mapping[str, Any],
    provider: str,
    default_ttl_s: float,
    policy: TTLPolicy | None = None,
) -> float: ...

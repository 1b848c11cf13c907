"""``RedisUnavailable``, apart from the guard that raises it.

A leaf that imports nothing of redis-py: code that runs with or without ``REDIS_URL``
(the admin endpoints, the cluster's section of ``/admin/stats``) catches it without
importing redis-py, which itself imports OpenTelemetry when that is installed; so a
worker started without ``REDIS_URL`` never loads either (``tests/test_lazy_redis.py``).
"""

from __future__ import annotations

__all__ = ("RedisUnavailable",)


class RedisUnavailable(Exception):
    """Redis could not be used for this call; the node goes on without it."""

"""Redis clients from URLs: a single server, a Redis Cluster, or a Sentinel-managed master.

The URL's scheme says which (``config.REDIS_SCHEMES``):

* ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` with TLS, or
  ``unix://[[user]:password@]/path/to/socket[?db=0]``: one server;
* ``redis+cluster://[[user]:password@]host:port`` (``rediss+cluster`` with TLS): any node
  of a Redis Cluster, which the client asks for the others;
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
  (``rediss+sentinel``): the sentinels, asked for the master of ``service``; the password
  is the master's.

Every client runs with the gateway's Redis timeout on connecting and on each read, and
without retries of its own: a call that fails is the guard's business (``guard``), never
retried behind its back, so no call outlives ``REDIS_TIMEOUT_MS`` by much.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

__all__ = ("RedisClient", "open_client")

#: What the rest of the gateway calls: both clients take the same commands.
RedisClient = Redis | RedisCluster


def open_client(url: str, timeout_s: float, *, name: str = "aigateway") -> RedisClient:
    """A client for ``url`` (not connected yet: the first call connects)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "client_name": name,
    }
    if scheme.endswith("+cluster"):
        base = scheme.removesuffix("+cluster")
        return RedisCluster.from_url(f"{base}://{rest}", **options)
    if scheme.endswith("+sentinel"):
        return _sentinel_master(scheme.removesuffix("+sentinel"), url, options)
    return Redis.from_url(url, retry=None, **options)


def _sentinel_master(base: str, url: str, options: dict[str, Any]) -> Redis:
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        sentinels.append((host or item, int(port) if host else 26379))
    path = [unquote(p) for p in parts.path.split("/") if p]
    service = path[0]
    if len(path) > 1:
        options["db"] = int(path[1])
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["username"] = unquote(parts.username)
    if base == "rediss":
        options["ssl"] = True
    sentinel = Sentinel(sentinels, sentinel_kwargs=_timeouts(options), **options)
    master: _SentinelMaster = sentinel.master_for(service, redis_class=_SentinelMaster)
    master.sentinels = sentinel.sentinels
    return master


class _SentinelMaster(Redis):
    """The master Sentinel names; closing it closes the clients of the sentinels too."""

    sentinels: list[Redis] = []

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinels:
            await client.aclose()


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")}

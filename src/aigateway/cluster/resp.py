"""A lean, pipelined link to one Redis server, for the shared cache on the request path.

redis-py spends about 70 µs of client CPU on each command here (its pool, locks, retry and
event machinery, a connection taken and given back per call), more than Redis takes to run
the script. A cache miss must not pay that, so the second tier's scripts go over this link
instead when the cache's Redis is a single server (``redis://``, ``unix://``): one
connection per worker, commands written as they come and their replies read in order
(RESP answers in order), parsed by hiredis. Measured from one uvloop process
(``LOOKUP_V1``, one at a time): about 15 µs of CPU and 28 µs of wall time per call,
against 70-80 µs and 100 µs through redis-py.

* Commands issued in the same turn of the event loop go out in one write at its end (a
  pipeline nobody has to assemble: under load, many requests' lookups and writes share a
  system call); :meth:`RespLink.send_script` waits for no reply (a miss's write, after
  its answer): no task, no future, its answer read and checked (a failure goes to the
  caller's ``on_failure``: never lost silently). It is held back to leave with the next
  call's write: for up to ``HOLD_S`` while other calls await their replies, ``HOLD_IDLE_S``
  when none does (one request at a time: the write then leaves after the answer went
  out, not on its way, and rides with the next miss's lookup).
* A call that times out (the guard's timeout around it) leaves its reply to be read and
  dropped when it comes; the link stays usable. A connection that has not answered for
  ``STALE_S`` is closed and made again at the next call (a Redis that went away without
  closing it).
* The connection is made at the first call, within the link's timeout; if it breaks,
  every call waiting on it fails with redis-py's ``ConnectionError`` (an outage to the
  guard) and the next call connects again.
* A script is sent by its SHA1 (``EVALSHA``), and once more in full (``EVAL``) if Redis
  does not know it (``NOSCRIPT``: a restarted or flushed Redis).

Redis Cluster, Sentinel, TLS and credential providers keep redis-py (``for_client`` says
None): slot routing and failover are what that library is for.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, ConnectionPool, UnixDomainSocketConnection

from aigateway.cluster.connect import RedisClient

__all__ = ("LuaScript", "RespLink")

logger = logging.getLogger("aigateway.cluster")

STALE_S: Final = 2.0  # no reply for this long: the connection is dead, make another
HOLD_S: Final = 0.002  # how long an unread command may wait for another call's write
HOLD_IDLE_S: Final = 0.001  # the same while no call awaits a reply (bounds its delay)
MAX_OUTSTANDING: Final = 10_000  # commands without their reply yet; past it, unread ones skip

Arg = bytes | str | int | float
OnReply = Callable[[Any], None]


def _dropped(reply: Any) -> None:
    if isinstance(reply, Exception):
        logger.debug("a Redis command failed: %r", reply)


@dataclass(frozen=True)
class LuaScript:
    """A script's text and its SHA1 (what ``EVALSHA`` names it by)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@dataclass(frozen=True)
class _Address:
    host: str = ""
    port: int = 6379
    path: str = ""  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None


class _Protocol(asyncio.Protocol):
    def __init__(self, link: RespLink) -> None:
        self.link = link
        self.reader = hiredis.Reader(replyError=redis_errors.ResponseError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        link = self.link
        while (reply := self.reader.gets()) is not False:
            link._replied(self, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost(self, exc)


class RespLink:
    """One pipelined connection to a single Redis server (see the module's docstring)."""

    def __init__(self, address: _Address, timeout_s: float, name: str = "aigateway") -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._name = name
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._waiting: collections.deque[OnReply] = collections.deque()
        self._buffer: list[bytes] = []
        self._flush_soon: asyncio.Handle | None = None
        self._flush_held: asyncio.TimerHandle | None = None
        self._awaited = 0  # calls awaiting their replies now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since = 0.0  # monotonic: the last reply, or the first write since the last
        self.commands = 0  # every command written (tests, figures)

    @classmethod
    def for_client(cls, client: RedisClient, timeout_s: float) -> RespLink | None:
        """A link to the server ``client`` talks to; None when that is not one plain server
        (a cluster, Sentinel, TLS, a credential provider): then use ``client`` itself."""
        if not isinstance(client, Redis):
            return None
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if type(pool) is not ConnectionPool or kwargs.get("credential_provider") is not None:
            return None
        db = int(kwargs.get("db") or 0)
        username, password = kwargs.get("username"), kwargs.get("password")
        if pool.connection_class is UnixDomainSocketConnection:
            address = _Address(
                path=str(kwargs["path"]), db=db, username=username, password=password
            )
        elif pool.connection_class is Connection:
            host, port = str(kwargs.get("host") or "localhost"), int(kwargs.get("port") or 6379)
            address = _Address(host, port, db=db, username=username, password=password)
        else:
            return None
        return cls(address, timeout_s, str(kwargs.get("client_name") or "aigateway"))

    # -- calls ------------------------------------------------------------------------

    async def script(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script`` and return its reply (``ResponseError``: Redis refused it)."""
        try:
            return await self._call(self._evalsha(script, keys, args))
        except redis_errors.NoScriptError:
            return await self._call(_pack(b"EVAL", script.source, len(keys), *keys, *args))

    def begin(
        self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> asyncio.Future[Any]:
        """Send ``script`` and return its reply to come, for a caller with work to do
        while Redis runs it; read it with :meth:`finish`. Written at the end of this loop
        turn with the other calls made in it, as :meth:`script` is: a caller that goes on
        in a task it schedules now (the miss's provider call) runs after that write."""
        loop = asyncio.get_running_loop()
        self._drop_if_stale()
        reply: asyncio.Future[Any] = loop.create_future()
        self._write(self._evalsha(script, keys, args), _settler(reply))
        self._awaited += 1
        reply.add_done_callback(self._answered)
        if self._protocol is None:
            self._connect(loop)  # written once connected; a failure fails the reply
        return reply

    async def finish(
        self,
        reply: asyncio.Future[Any],
        script: LuaScript,
        keys: Sequence[Arg],
        args: Sequence[Arg],
    ) -> Any:
        """The reply of a command :meth:`begin` wrote (the script sent in full if Redis did
        not know it). Cancelled (the guard's timeout): the reply is still read when it
        comes, for whoever asks the future (a claim it made to release)."""
        try:
            return await asyncio.shield(reply)
        except redis_errors.NoScriptError:
            return await self._call(_pack(b"EVAL", script.source, len(keys), *keys, *args))

    def _answered(self, reply: asyncio.Future[Any]) -> None:
        self._awaited -= 1
        if not reply.cancelled():
            reply.exception()  # retrieved: a reply nobody reads is no error to report

    def send_script(
        self,
        script: LuaScript,
        keys: Sequence[Arg],
        args: Sequence[Arg],
        on_failure: Callable[[Exception], None] = _dropped,
    ) -> bool:
        """Send ``script`` soon without waiting for its reply; ``on_failure`` is told if
        Redis refuses it or the connection breaks before it answers. False if it was not
        sent (too many replies outstanding: Redis is not keeping up)."""
        if len(self._waiting) >= MAX_OUTSTANDING:
            return False
        source = script.source

        def replied(reply: Any) -> None:
            if isinstance(reply, redis_errors.NoScriptError):  # sent in full this time
                self._write(_pack(b"EVAL", source, len(keys), *keys, *args), again)
            elif isinstance(reply, Exception):
                on_failure(reply)

        def again(reply: Any) -> None:
            if isinstance(reply, Exception):
                on_failure(reply)

        # Held back to ride with the next call's write (within HOLD_S while calls await
        # their replies, HOLD_IDLE_S otherwise): one system call for both here and one
        # read for both on Redis, and none between an answer and its client.
        self._write(self._evalsha(script, keys, args), replied, hold=True)
        return True

    async def drain(self) -> None:
        """Send what is held back and wait until every reply is in (tests; closing)."""
        while self._waiting:  # a NOSCRIPT answer sends its command again, behind the PING
            await self._call(_pack(b"PING"))

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._fail_all(redis_errors.ConnectionError("the link was closed"))

    # -- internals --------------------------------------------------------------------

    def _evalsha(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
        return _pack(b"EVALSHA", script.sha, len(keys), *keys, *args)

    async def _call(self, packed: bytes) -> Any:
        loop = asyncio.get_running_loop()
        self._drop_if_stale()
        reply: asyncio.Future[Any] = loop.create_future()

        def replied(value: Any) -> None:
            if not reply.done():
                if isinstance(value, Exception):
                    reply.set_exception(value)
                else:
                    reply.set_result(value)

        self._write(packed, replied)
        self._awaited += 1
        try:
            if self._protocol is None:
                await asyncio.shield(self._connect(loop))
            return await reply
        finally:  # timed out, or the connection failed: nobody else will read it
            self._awaited -= 1
            if not reply.done():
                reply.cancel()
            elif not reply.cancelled():
                reply.exception()

    def _write(self, packed: bytes, on_reply: OnReply, *, hold: bool = False) -> None:
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append(on_reply)
        self._buffer.append(packed)
        self.commands += 1
        loop = self._loop
        if self._protocol is None or loop is None:
            return  # written once connected
        if not hold:
            if self._flush_soon is None:
                self._flush_soon = loop.call_soon(self._flush)
        elif self._flush_soon is None and self._flush_held is None:
            self._flush_held = loop.call_later(
                HOLD_S if self._awaited else HOLD_IDLE_S, self._flush
            )

    def _flush(self) -> None:
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._flush_held is not None:
            self._flush_held.cancel()
            self._flush_held = None
        protocol = self._protocol
        if protocol is None or protocol.transport is None or not self._buffer:
            return
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer.clear()
        protocol.transport.write(data)

    def _connect(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[_Protocol]:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open(loop))
            self._connecting.add_done_callback(_retrieved)
        return self._connecting

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        address = self._address
        try:
            async with asyncio.timeout(self._timeout_s):
                if address.path:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), address.path
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self), address.host, address.port
                    )
                hello = self._handshake()
                # The handshake's replies come first: put their waiters ahead of the calls
                # written while connecting.
                replies: list[asyncio.Future[Any]] = [loop.create_future() for _ in hello]
                for future in reversed(replies):
                    self._waiting.appendleft(_resolver(future))
                self._buffer[:0] = hello
                self._protocol, self._loop = protocol, loop
                self._since = time.monotonic()
                self._flush()
                for future in replies:
                    reply = await future
                    if isinstance(reply, Exception):
                        raise redis_errors.AuthenticationError(str(reply))
                return protocol
        except BaseException as exc:
            failure: Exception = redis_errors.ConnectionError(f"cannot connect to Redis: {exc}")
            if isinstance(exc, TimeoutError):
                failure = redis_errors.TimeoutError("connecting to Redis timed out")
            elif isinstance(exc, redis_errors.RedisError):
                failure = exc
            self._fail_all(failure)
            if self._protocol is not None and self._protocol.transport is not None:
                self._protocol.transport.close()
            self._protocol = None
            if not isinstance(exc, Exception):
                raise  # cancelled: the loop is closing
            raise failure from None

    def _handshake(self) -> list[bytes]:
        address = self._address
        commands = []
        if address.password is not None:
            credentials = (
                [address.username, address.password] if address.username else [address.password]
            )
            commands.append(_pack(b"AUTH", *credentials))
        if address.db:
            commands.append(_pack(b"SELECT", address.db))
        commands.append(_pack(b"CLIENT", b"SETNAME", self._name))
        return commands

    def _replied(self, protocol: _Protocol, reply: Any) -> None:
        if protocol is not self._protocol:
            return
        self._since = time.monotonic()
        if isinstance(reply, redis_errors.ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = redis_errors.NoScriptError(str(reply))
        if self._waiting:
            self._waiting.popleft()(reply)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._protocol = None
            why = f": {exc}" if exc else ""
            self._fail_all(redis_errors.ConnectionError(f"Redis closed the connection{why}"))

    def _fail_all(self, error: Exception) -> None:
        self._buffer.clear()
        waiting, self._waiting = self._waiting, collections.deque()
        for on_reply in waiting:
            on_reply(error)

    def _drop_if_stale(self) -> None:
        """No reply for ``STALE_S`` while some are due: the connection is dead (a Redis
        that went away without closing it); close it, the next write connects again."""
        protocol = self._protocol
        if protocol is None or not self._waiting:
            return
        if time.monotonic() - self._since > STALE_S:
            self._protocol = None
            if protocol.transport is not None:
                protocol.transport.abort()
            self._fail_all(redis_errors.ConnectionError("Redis stopped answering"))


def _pack(*args: Arg) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub: 1-tuples
    return packed


def _settler(future: asyncio.Future[Any]) -> OnReply:
    """Its result, or its exception when the reply is an error."""

    def settle(value: Any) -> None:
        if not future.done():
            if isinstance(value, Exception):
                future.set_exception(value)
            else:
                future.set_result(value)

    return settle


def _resolver(future: asyncio.Future[Any]) -> OnReply:
    def resolve(value: Any) -> None:
        if not future.done():
            future.set_result(value)

    return resolve


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

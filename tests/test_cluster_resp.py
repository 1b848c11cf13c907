"""The lean link the shared cache's scripts take to a single Redis on a miss.

Against a real ``redis-server`` of each test's own (``cluster/resp.py``): scripts answer
as through redis-py, one unknown to Redis is sent in full, a script sent without waiting
lands, commands issued together share one write, one sent without waiting is held back to
ride with the next call's write (or leaves by itself within a millisecond or two), one
Redis refuses or a broken connection loses is reported, a call that times out leaves the
link usable and in order, a Redis that restarts is connected to again, the URL's password and
database are used, and anything but one plain server keeps redis-py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from aigateway.cluster.connect import open_client
from aigateway.cluster.resp import LuaScript, RespLink
from redis_servers import RedisServer

ECHO = LuaScript("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
SET = LuaScript("redis.call('SET', KEYS[1], ARGV[1]) return 1")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    started = RedisServer()
    yield started
    started.stop()


def link_to(url: str, timeout_s: float = 2.0) -> RespLink:
    link = RespLink.for_client(open_client(url, timeout_s), timeout_s)
    assert link is not None
    return link


def test_a_script_answers_and_one_redis_does_not_know_is_sent_in_full(
    server: RedisServer,
) -> None:
    async def main() -> list[object]:
        link = link_to(server.url)
        first = await link.script(ECHO, ["k"], ["v", 41])  # NOSCRIPT: sent again with EVAL
        second = await link.script(ECHO, ["k"], [b"\x00bytes", 1])  # by its SHA1 now
        await link.close()
        return [first, second]

    assert asyncio.run(main()) == [[b"k", b"v", 42], [b"k", b"\x00bytes", 2]]


def test_a_script_sent_without_waiting_lands_and_commands_issued_together_share_a_write(
    server: RedisServer,
) -> None:
    client = server.client()

    async def main() -> list[object]:
        link = link_to(server.url)
        await link.script(SET, ["warm"], ["up"])
        client.config_resetstat()
        reads_before = int(client.info("stats")["total_reads_processed"])
        for n in range(50):
            assert link.send_script(SET, [f"key{n}"], [str(n)])
        answers = await asyncio.gather(*(link.script(ECHO, ["k"], ["v", n]) for n in range(50)))
        await link.drain()
        reads = int(client.info("stats")["total_reads_processed"]) - reads_before
        await link.close()
        return [answers[-1], reads]

    last, reads = asyncio.run(main())
    assert last == [b"k", b"v", 50]
    assert [client.get(f"key{n}") for n in (0, 49)] == [b"0", b"49"]
    assert reads < 20  # 100 commands and a PING in a few reads (the INFO calls count too)


def test_a_script_sent_without_waiting_rides_with_the_next_calls_write_or_leaves_by_itself(
    server: RedisServer,
) -> None:
    client = server.client()

    def reads() -> int:
        return int(client.info("stats")["total_reads_processed"])

    async def main() -> tuple[list[int], object, bytes | None]:
        link = link_to(server.url)
        await link.script(SET, ["warm"], ["up"])  # each script known to Redis: no NOSCRIPT
        await link.script(ECHO, ["k"], ["warm", 0])
        before = reads()
        await link.script(ECHO, ["k"], ["alone", 0])
        alone_reads = reads() - before
        before = reads()
        assert link.send_script(SET, ["held"], ["1"])  # one request at a time: held back
        answer = await link.script(ECHO, ["k"], ["next", 0])  # ...and leaves with this
        both_reads = reads() - before
        assert link.send_script(SET, ["alone"], ["2"])  # nothing follows: it goes by itself
        for _ in range(200):
            if client.get("alone") is not None:
                break
            await asyncio.sleep(0.01)
        alone = client.get("alone")
        await link.close()
        return [alone_reads, both_reads], answer, alone

    reads_taken, answer, alone = asyncio.run(main())
    assert answer == [b"k", b"next", 1] and client.get("held") == b"1"
    assert reads_taken[1] == reads_taken[0]  # the held write cost Redis no read of its own
    assert alone == b"2"


def test_a_script_sent_without_waiting_that_fails_is_reported_never_lost_silently(
    server: RedisServer,
) -> None:
    client = server.client()
    client.set("a-string", "x")
    increment = LuaScript("return redis.call('INCR', KEYS[1])")

    async def main() -> list[str]:
        failures: list[str] = []
        link = link_to(server.url)
        await link.script(SET, ["warm"], ["up"])
        link.send_script(
            increment, ["a-string"], [], lambda exc: failures.append(type(exc).__name__)
        )
        await link.drain()  # Redis refused it: not an integer
        link.send_script(SET, ["lost"], ["1"], lambda exc: failures.append(type(exc).__name__))
        await link.close()  # the connection goes before its reply came
        return failures

    refused, lost = asyncio.run(main())
    assert (refused, lost) == ("ResponseError", "ConnectionError")


def test_a_call_that_times_out_leaves_the_link_usable_and_its_answers_in_order(
    server: RedisServer,
) -> None:
    async def main() -> tuple[bool, object]:
        link = link_to(server.url)
        await link.script(ECHO, ["k"], ["warm", 0])
        server.freeze()
        try:
            async with asyncio.timeout(0.2):
                await link.script(ECHO, ["k"], ["lost", 0])
            timed_out = False
        except TimeoutError:
            timed_out = True
        finally:
            server.thaw()
        after = await link.script(ECHO, ["k"], ["after", 0])  # not the late one's reply
        await link.close()
        return timed_out, after

    timed_out, after = asyncio.run(main())
    assert timed_out and after == [b"k", b"after", 1]


def test_a_redis_that_restarts_fails_the_calls_under_way_then_is_connected_to_again(
    server: RedisServer,
) -> None:
    async def main() -> object:
        link = link_to(server.url)
        await link.script(ECHO, ["k"], ["before", 0])
        server.kill()
        with pytest.raises(redis_errors.ConnectionError):  # an outage, to the guard
            await link.script(ECHO, ["k"], ["while down", 0])
        server.start()
        answer = await link.script(ECHO, ["k"], ["after", 0])
        await link.close()
        return answer

    assert asyncio.run(main()) == [b"k", b"after", 1]


def test_the_urls_password_and_database_are_used(server: RedisServer) -> None:
    client = server.client()
    client.config_set("requirepass", "s3cret")  # new connections must authenticate
    url = f"redis://:s3cret@127.0.0.1:{server.port}/3"

    async def main() -> None:
        link = link_to(url)
        await link.script(SET, ["in-db-3"], ["yes"])
        await link.close()

    try:
        asyncio.run(main())
        client.execute_command("AUTH", "s3cret")
        client.execute_command("SELECT", "3")
        assert client.get("in-db-3") == b"yes"
    finally:
        client.config_set("requirepass", "")


def test_anything_but_one_plain_server_keeps_redis_py() -> None:
    assert RespLink.for_client(Redis.from_url("redis://127.0.0.1:1"), 1.0) is not None
    assert RespLink.for_client(Redis.from_url("unix:///tmp/redis.sock"), 1.0) is not None
    assert RespLink.for_client(Redis.from_url("rediss://127.0.0.1:1"), 1.0) is None
    cluster = RedisCluster.__new__(RedisCluster)  # never connected: its type is the point
    assert RespLink.for_client(cluster, 1.0) is None

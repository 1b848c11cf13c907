"""The lean link the shared cache's scripts take to a single Redis on a miss.

Against a real ``redis-server`` of each test's own (``cluster/resp.py``): scripts answer
as through redis-py, one unknown to Redis is sent in full, a script sent without waiting
lands, commands issued together share one write, a call that times out leaves the link
usable and in order, a Redis that restarts is connected to again, the URL's password and
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

"""FlightTable: the node's calls in flight, claimed and released in shared memory.

A worker that misses the cache claims the key before it calls the provider; a worker of
the same node that finds another live process's claim waits for that answer instead.
Behaviour tests run against both twins (``hotpath_impl``) with explicit ``now`` values
and a private buffer; a dead process is a real one that has exited, and the last test
has real processes race for the same keys in one shared mapping.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aigateway import hotpath

NOW = 1_800_000_000.0  # a wall-clock time, in seconds
ME = os.getpid()
PARENT = os.getppid()  # another process that is alive
KEY = bytes(range(16))


def table(impl: Any, slots: int = 64) -> Any:
    return impl.FlightTable(bytearray(impl.FlightTable.size(slots)), slots)


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, check=True, text=True)  # fmt: skip
    return int(child.stdout)


def key(i: int) -> bytes:
    return i.to_bytes(16, "little")


def test_a_free_key_is_claimed_and_its_owner_and_deadline_are_read_back(hotpath_impl):
    flights = table(hotpath_impl)
    assert flights.claim(KEY, ME, NOW + 5, NOW) is None
    assert flights.owner(KEY, NOW) == (ME, NOW + 5)
    assert flights.owner(key(7), NOW) is None


def test_another_live_process_claim_is_returned_and_left_as_it_is(hotpath_impl):
    flights = table(hotpath_impl)
    assert flights.claim(KEY, PARENT, NOW + 30, NOW) is None
    assert flights.claim(KEY, ME, NOW + 5, NOW) == (PARENT, NOW + 30)
    assert flights.owner(KEY, NOW) == (PARENT, NOW + 30)


def test_a_claim_of_ones_own_is_renewed(hotpath_impl):
    flights = table(hotpath_impl)
    flights.claim(KEY, ME, NOW + 5, NOW)
    assert flights.claim(KEY, ME, NOW + 9, NOW) is None
    assert flights.owner(KEY, NOW) == (ME, NOW + 9)


def test_a_claim_past_its_deadline_is_ignored_and_replaced(hotpath_impl):
    flights = table(hotpath_impl)
    flights.claim(KEY, PARENT, NOW + 1, NOW)
    assert flights.owner(KEY, NOW + 1) is None  # its deadline is over
    assert flights.claim(KEY, ME, NOW + 5, NOW + 1) is None
    assert flights.owner(KEY, NOW + 1) == (ME, NOW + 5)


def test_a_dead_process_claim_is_ignored_and_replaced(hotpath_impl):
    flights = table(hotpath_impl)
    gone = dead_pid()
    flights.claim(KEY, gone, NOW + 60, NOW)
    assert flights.owner(KEY, NOW) is None
    assert flights.claim(KEY, ME, NOW + 5, NOW) is None
    assert flights.owner(KEY, NOW) == (ME, NOW + 5)


def test_only_the_owner_releases_a_claim(hotpath_impl):
    flights = table(hotpath_impl)
    flights.claim(KEY, PARENT, NOW + 30, NOW)
    assert flights.release(KEY, ME) is False
    assert flights.owner(KEY, NOW) == (PARENT, NOW + 30)
    assert flights.release(KEY, PARENT) is True
    assert flights.owner(KEY, NOW) is None
    assert flights.release(KEY, PARENT) is False  # once


def test_deadlines_are_kept_to_the_millisecond_rounded_up(hotpath_impl):
    flights = table(hotpath_impl)
    flights.claim(KEY, ME, NOW + 0.0001, NOW)
    assert flights.owner(KEY, NOW) == (ME, NOW + 0.001)


def test_keys_that_share_a_home_slot_take_the_next_ones(hotpath_impl):
    flights = table(hotpath_impl, slots=64)
    same_home = [key(3 + 64 * i) for i in range(10)]  # first 8 bytes equal modulo 64
    for i, k in enumerate(same_home):
        assert flights.claim(k, ME, NOW + 1 + i, NOW) is None
    for i, k in enumerate(same_home):
        assert flights.owner(k, NOW) == (ME, NOW + 1 + i)
    flights.release(same_home[0], ME)  # a hole before the others: they are still found
    assert [flights.owner(k, NOW) is not None for k in same_home] == [False] + [True] * 9


def test_a_full_window_claims_nothing_and_lets_the_caller_go_on(hotpath_impl):
    flights = table(hotpath_impl, slots=64)
    crowd = [key(5 + 64 * i) for i in range(40)]
    for k in crowd:
        flights.claim(k, PARENT, NOW + 30, NOW)
    held = [k for k in crowd if flights.owner(k, NOW) is not None]
    assert len(held) == 32  # the window of a key: 32 slots from its home
    late = crowd[-1]
    assert flights.owner(late, NOW) is None
    assert flights.claim(late, ME, NOW + 5, NOW) is None  # "go on": no claim, no waiting
    assert flights.owner(late, NOW) is None
    # A claim past its deadline frees its slot for the next one.
    assert flights.claim(late, ME, NOW + 50, NOW + 31) is None
    assert flights.owner(late, NOW + 31) == (ME, NOW + 50)


def test_a_full_window_reuses_the_slot_of_a_dead_process(hotpath_impl):
    flights = table(hotpath_impl, slots=32)
    gone = dead_pid()
    for i in range(32):
        flights.claim(key(i), gone if i == 7 else PARENT, NOW + 30, NOW)
    assert flights.claim(key(99), ME, NOW + 5, NOW) is None
    assert flights.owner(key(99), NOW) == (ME, NOW + 5)


def test_drop_clears_expired_claims_and_reports_those_of_dead_processes(hotpath_impl):
    flights = table(hotpath_impl)
    gone = dead_pid()
    flights.claim(key(1), gone, NOW + 60, NOW)  # dead, within its deadline: reported
    flights.claim(key(2), PARENT, NOW + 1, NOW)  # past its deadline at NOW + 2: cleared
    flights.claim(key(3), PARENT, NOW + 60, NOW)  # alive: kept
    flights.claim(key(4), ME, NOW + 60, NOW)  # the caller's own: kept, whatever gone says
    dropped = flights.drop(lambda pid: pid in (gone, ME), ME, NOW + 2)
    assert dropped == [(key(1), gone)]
    assert flights.owner(key(2), NOW) is None
    assert flights.owner(key(3), NOW) == (PARENT, NOW + 60)
    assert flights.owner(key(4), NOW) == (ME, NOW + 60)
    assert flights.drop(lambda pid: True, ME, NOW + 2) == [(key(3), PARENT)]


def test_tables_in_one_buffer_share_their_claims_and_either_twin_reads_the_other():
    impls = [hotpath.load("python")]
    if not hotpath.NO_EXTENSIONS:
        impls.append(hotpath.load("cython"))
    buffer = bytearray(impls[0].FlightTable.size(128))
    tables = [impl.FlightTable(buffer, 128) for impl in impls]
    tables[0].claim(KEY, PARENT, NOW + 30, NOW)
    for flights in tables:
        assert flights.owner(KEY, NOW) == (PARENT, NOW + 30)
        assert flights.claim(KEY, ME, NOW + 5, NOW) == (PARENT, NOW + 30)
    tables[-1].release(KEY, PARENT)
    assert tables[0].owner(KEY, NOW) is None


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda t: t.claim(b"short", ME, NOW, NOW), ValueError),
        (lambda t: t.claim(KEY, 0, NOW, NOW), ValueError),
        (lambda t: t.claim(KEY, 1 << 22, NOW, NOW), ValueError),
        (lambda t: t.claim(KEY, ME, float("nan"), NOW), ValueError),
        (lambda t: t.owner(b"x" * 17, NOW), ValueError),
    ],
    ids=["short key", "pid 0", "pid too large", "nan deadline", "long key"],
)
def test_bad_claims_are_rejected(hotpath_impl, call, error):
    with pytest.raises(error):
        call(table(hotpath_impl))


def test_unusable_buffers_are_rejected(hotpath_impl):
    impl = hotpath_impl.FlightTable
    with pytest.raises(ValueError, match="needs"):
        impl(bytearray(100), 64)  # too small
    with pytest.raises(TypeError):
        impl(bytes(impl.size(64)), 64)  # read-only
    with pytest.raises(ValueError, match="power of two"):
        impl(bytearray(impl.size(64)), 48)  # not a power of two
    other = bytearray(impl.size(128))
    impl(other, 128)
    with pytest.raises(ValueError, match="slots"):
        impl(other, 64)  # made with another size
    with pytest.raises(ValueError, match="no flight table"):
        impl(bytearray(b"\x01" * impl.size(64)), 64)  # not a flight table


def test_a_closed_table_refuses_to_work(hotpath_impl):
    flights = table(hotpath_impl)
    flights.close()
    flights.close()
    with pytest.raises(ValueError, match="closed"):
        flights.claim(KEY, ME, NOW + 5, NOW)


def test_the_twins_agree_on_random_sequences_of_calls():
    if hotpath.NO_EXTENSIONS:
        pytest.skip("AIGATEWAY_NO_EXTENSIONS is set: the compiled twins are not used")
    pure, compiled = (table(hotpath.load(name), slots=32) for name in ("python", "cython"))
    rng = random.Random(19)
    keys = [key(rng.choice([1, 33, 65, 2, 34])) for _ in range(8)]
    for step in range(3000):
        k, pid = rng.choice(keys), rng.choice([ME, PARENT])
        now = NOW + step * 0.01
        op = rng.randrange(4)
        if op == 0:
            args: tuple[Any, ...] = (k, pid, now + rng.uniform(0, 2), now)
            assert pure.claim(*args) == compiled.claim(*args), step
        elif op == 1:
            assert pure.owner(k, now) == compiled.owner(k, now), step
        elif op == 2:
            assert pure.release(k, pid) == compiled.release(k, pid), step
        else:
            dead = rng.choice([PARENT, -1])
            gone = dead.__eq__
            assert pure.drop(gone, ME, now) == compiled.drop(gone, ME, now), step


# -- real processes, one mapping ------------------------------------------------------------


def _race(path: str, impl_name: str, rounds: int, out: Any) -> None:
    impl = hotpath.load(impl_name)
    fd = os.open(path, os.O_RDWR)
    mapping = mmap.mmap(fd, impl.FlightTable.size(256))
    os.close(fd)
    flights = impl.FlightTable(mapping, 256, lock_path=path)
    led = followed = 0
    for r in range(rounds):
        k = key(r % 64)
        holder = flights.claim(k, os.getpid(), 4e9, 0.0)
        if holder is None:
            led += 1
            flights.release(k, os.getpid())
        else:
            followed += 1
    flights.close()
    mapping.close()
    out.put((led, followed))


def test_processes_racing_for_the_same_keys_leave_no_claim_behind(hotpath_impl, tmp_path: Path):
    # Three processes claim and release the same 64 keys as fast as they can: every
    # claim is taken or refused whole (its holder is named), and once they are done the
    # table is empty again (no claim lost half-written, none released by another).
    path = str(tmp_path / "flights")
    with open(path, "wb") as file:
        file.truncate(hotpath_impl.FlightTable.size(256))
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_race, args=(path, hotpath_impl.IMPLEMENTATION, 3000, out))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert sum(led + followed for led, followed in results) == 9000
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    flights = hotpath_impl.FlightTable(mapping, 256)
    assert [k for k in map(key, range(64)) if flights.owner(k, 0.0) is not None] == []
    assert flights.drop(lambda pid: True, ME, 0.0) == []
    flights.close()
    mapping.close()

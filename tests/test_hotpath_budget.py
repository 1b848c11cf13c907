"""BudgetWords: a tenant key's budget in two shared-memory words, reserved without a lock.

Both twins give the same results and the same words (``hotpath_impl``); the compiled one
changes the words with compare-and-swap, so processes reserving from one budget at once
overshoot it by at most one call's estimate and lose no settlement, which the last test
checks with real processes.
"""

from __future__ import annotations

import mmap
import multiprocessing
from pathlib import Path

import pytest

from aigateway import hotpath


def test_a_call_is_reserved_while_anything_is_left_of_the_budget(hotpath_impl):
    words = hotpath_impl.BudgetWords(bytearray(32))
    words.reset(16, 3, 0.6)
    assert words.reserve(16, 3, 1.0, 0.3) == -1.0  # 0.9 used
    assert words.reserve(16, 3, 1.0, 0.3) == -1.0  # 0.9 < 1.0: let through, 1.2 used
    assert words.reserve(16, 3, 1.0, 0.3) == pytest.approx(1.2)  # refused, says what
    epoch, used, reserved = words.read(16)
    assert epoch == 3 and used == pytest.approx(1.2) and reserved == pytest.approx(0.6)
    assert words.read(0) == (0, 0.0, 0.0)


def test_a_settled_call_counts_its_cost_instead_of_its_estimate(hotpath_impl):
    words = hotpath_impl.BudgetWords(bytearray(16))
    words.reset(0, 1, 0.0)
    words.reserve(0, 1, 1.0, 0.3)
    words.reserve(0, 1, 1.0, 0.3)
    assert words.settle(0, 1, 0.3, 0.25) is True  # answered for less than its estimate
    assert words.settle(0, 1, 0.3, 0.0) is True  # failed: all of it back
    assert words.read(0) == (1, pytest.approx(0.25), 0.0)  # exactly nothing in flight
    assert words.add(0, 1, 0.5) is True  # spent elsewhere (another node)
    assert words.read(0)[1] == pytest.approx(0.75)


def test_words_laid_out_for_another_owner_are_left_alone(hotpath_impl):
    """A revoked key's call that settles after its slot went to a new key (the next
    epoch) changes nothing, and is not refused for the new key's spend either."""
    buffer = bytearray(16)
    words = hotpath_impl.BudgetWords(buffer)
    words.reset(0, 1, 0.0)
    words.reserve(0, 1, 10.0, 0.4)
    words.reset(0, 2, 5.0)  # the slot re-laid for the next key
    before = bytes(buffer)
    assert words.reserve(0, 1, 1.0, 0.4) == -1.0
    assert words.settle(0, 1, 0.4, 0.4) is False
    assert words.add(0, 1, 1.0) is False
    assert words.rebase(0, 1, 0.0) is False
    assert bytes(buffer) == before
    assert words.read(0) == (2, 5.0, 0.0)


def test_a_new_period_starts_from_its_spend_and_keeps_the_calls_in_flight(hotpath_impl):
    words = hotpath_impl.BudgetWords(bytearray(16))
    words.reset(0, 1, 0.9)
    words.reserve(0, 1, 1.0, 0.2)
    assert words.rebase(0, 1, 0.0) is True  # the month is over: nothing spent in the new
    assert words.read(0) == (1, pytest.approx(0.2), pytest.approx(0.2))
    words.settle(0, 1, 0.2, 0.1)
    assert words.read(0) == (1, pytest.approx(0.1), 0.0)


def test_values_keep_eleven_significant_digits_and_large_budgets(hotpath_impl):
    words = hotpath_impl.BudgetWords(bytearray(16))
    words.reset(0, 65535, 1234.567891234)
    epoch, used, _ = words.read(0)
    assert epoch == 65535 and used == pytest.approx(1234.567891234, rel=1e-11)
    assert words.reserve(0, 65535, 1e9, 1.5e-7) == -1.0
    assert words.read(0)[1] == pytest.approx(1234.567891384, rel=1e-11)
    words.reset(0, 7, 1e12)
    assert words.reserve(0, 7, 1e9, 1.0) == pytest.approx(1e12)


def test_both_twins_write_the_same_words():
    twins = [hotpath.load("python")]
    if not hotpath.NO_EXTENSIONS:
        twins.append(hotpath.load("cython"))
    results = []
    for twin in twins:
        buffer = bytearray(32)
        words = twin.BudgetWords(buffer)
        words.reset(8, 9, 0.125)
        words.reserve(8, 9, 1.0, 0.3333)
        words.settle(8, 9, 0.3333, 0.1111)
        words.add(8, 9, 0.07)
        words.rebase(8, 9, 0.01)
        results.append(bytes(buffer))
    assert all(result == results[0] for result in results)


def test_budgets_outside_the_buffer_are_refused(hotpath_impl):
    words = hotpath_impl.BudgetWords(bytearray(32))
    for at in (-8, 4, 24, 32):
        with pytest.raises(ValueError, match="no budget fits"):
            words.read(at)
    with pytest.raises(TypeError):
        hotpath_impl.BudgetWords(bytes(32))


def test_only_the_compiled_twin_reserves_without_a_lock():
    assert hotpath.load("python").ATOMIC_BUDGET is False
    if not hotpath.NO_EXTENSIONS:
        assert hotpath.load("cython").ATOMIC_BUDGET is True


def _spend(path: str, calls: int) -> None:
    twin = hotpath.load("cython")
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    words = twin.BudgetWords(mapping)
    for _ in range(calls):
        if words.reserve(0, 1, 1e6, 1.0) == -1.0:
            words.settle(0, 1, 1.0, 0.5)  # cost half its estimate
    words.close()
    mapping.close()


def _reserve(path: str, calls: int) -> None:
    twin = hotpath.load("cython")
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    words = twin.BudgetWords(mapping)
    for _ in range(calls):
        words.reserve(0, 1, 1000.0, 1.0)
    words.close()
    mapping.close()


@pytest.mark.skipif(hotpath.NO_EXTENSIONS, reason="the compiled twins are not used")
def test_processes_reserving_from_one_budget_at_once_overshoot_by_at_most_one_call(
    tmp_path: Path,
):
    path = tmp_path / "budget"
    path.write_bytes(bytes(4096))
    with open(path, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    words = hotpath.load("cython").BudgetWords(mapping)
    context = multiprocessing.get_context("spawn")
    words.reset(0, 1, 0.0)
    spenders = [context.Process(target=_spend, args=(str(path), 1000)) for _ in range(3)]
    for process in spenders:
        process.start()
    for process in spenders:
        process.join(120)
    assert [process.exitcode for process in spenders] == [0, 0, 0]
    assert words.read(0) == (1, 1500.0, 0.0)  # every settlement counted, none in flight
    words.reset(0, 1, 0.0)
    reservers = [context.Process(target=_reserve, args=(str(path), 700)) for _ in range(3)]
    for process in reservers:
        process.start()
    for process in reservers:
        process.join(120)
    assert [process.exitcode for process in reservers] == [0, 0, 0]
    # 2,100 tries at $1 against $1,000: the last let through saw $999, none more.
    assert words.read(0) == (1, 1000.0, 1000.0)
    words.close()
    mapping.close()

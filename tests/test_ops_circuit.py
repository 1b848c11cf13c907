"""Provider health states and circuit breaking (core.health), clock under test control."""

from __future__ import annotations

import pytest

from aigateway.core.health import HealthBoard, HealthPolicy
from aigateway.providers.openai import OpenAIAdapter

POLICY = HealthPolicy(failure_threshold=3, cooldown_s=10.0, probe_interval_s=30.0, slow_s=2.0)


@pytest.fixture
def board() -> HealthBoard:
    return HealthBoard.private(["openai", "google"], POLICY)


def fail(board: HealthBoard, times: int, outcome: str = "server_error") -> None:
    for _ in range(times):
        board.record("openai", outcome, 0.1)


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count(board):
    fail(board, 2)
    assert board.state("openai") == "degraded"
    board.record("openai", "ok", 0.1)
    fail(board, 2)
    assert board.closed("openai")
    fail(board, 1)
    assert not board.closed("openai")
    assert board.state("openai") == "open"
    assert board.report("openai")["last_failure"] == "server_error"
    assert 9.0 < board.retry_after("openai") <= 10.0
    assert board.state("google") == "healthy"  # one provider's trouble is its own


@pytest.mark.parametrize(
    "outcome", ["client_error", "rate_limited", "cancelled", "deadline", "account_error"]
)
def test_client_errors_rate_limits_cancellations_and_clients_deadlines_do_not_open_it(
    board, outcome
):
    fail(board, 10, outcome)
    assert board.closed("openai")


def test_after_the_cool_down_one_probe_decides(board):
    fail(board, 3, "unreachable")
    opened = board._entry("openai").open_until
    assert not board.take_probe("openai", now=opened - 1)  # still cooling down
    assert board.take_probe("openai", now=opened)  # one worker gets the trial...
    assert not board.take_probe("openai", now=opened + 0.1)  # ...and no other
    assert board.state("openai", now=opened) == "half_open"
    board.record("openai", "timeout", 1.0, probe=True)
    assert board.state("openai") == "open"  # failed: another cool-down
    assert board.report("openai")["times_opened"] == 2
    again = board._entry("openai").open_until
    assert board.take_probe("openai", now=again)
    board.record("openai", "ok", 0.2, probe=True)
    assert board.closed("openai")
    assert board.state("openai") == "healthy"  # a fresh window: old failures are gone


def test_a_high_error_rate_opens_it_without_a_streak(board):
    for _ in range(12):
        board.record("openai", "ok", 0.1)
        board.record("openai", "server_error", 0.1)
    assert not board.closed("openai")


def test_slow_answers_make_a_provider_degraded(board):
    for _ in range(3):
        board.record("openai", "ok", 5.0)
    assert board.state("openai") == "degraded"
    assert board.closed("openai")


def test_threshold_zero_never_opens_a_circuit():
    board = HealthBoard.private(["openai"], HealthPolicy(failure_threshold=0))
    fail(board, 50)
    assert board.closed("openai")


def test_periodic_probes_come_one_interval_apart(board):
    assert not board.take_probe("openai", now=100.0)  # the first: one interval after start
    assert not board.take_probe("openai", now=129.0)
    assert board.take_probe("openai", now=130.0)
    assert not board.take_probe("openai", now=131.0)  # another worker: not its turn
    assert board.take_probe("openai", now=160.0)


def test_a_provider_that_cannot_be_probed_lets_one_live_request_try(board):
    circuit = board.circuit("openai", probe_able=False)
    fail(board, 3)
    assert not circuit.allows()
    board._f64[1] = 0.0  # the cool-down is over
    assert circuit.allows()  # one trial request...
    assert not circuit.allows()  # ...at a time
    board.record("openai", "ok", 0.1)
    assert circuit.allows() and board.closed("openai")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(404, "client_error"), (429, "rate_limited"), (401, "auth_error"),
     (503, "server_error"), (408, "server_error")],
)  # fmt: skip
def test_an_adapters_classification_of_an_error_answer_gives_its_outcome(status, outcome):
    adapter = OpenAIAdapter("openai", "http://127.0.0.1:9/v1", "sk-test", "OPENAI_API_KEY")
    assert adapter.classify_error(status, {}, b"{}").error.fault.outcome == outcome

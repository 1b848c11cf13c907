"""Schemathesis against a live gateway's ``/openapi.json``: every operation, fixed data.

A real gateway (2 workers, cache on, every model routed to the bundled mock through
``default_provider``) is given the requests schemathesis generates from the document,
deterministically and a bounded number per operation. It must never answer 5xx, every
answer must fit the document (status, content type, body, SSE events), and every request
the schemas accept must be accepted (2xx, or 404 for a resource that does not exist).
``PUT /admin/config`` is left out: it changes the live settings of the whole node, and
its values are checked like the environment variables (tests/test_api_schema_mirror.py
checks its schema against the server's checks instead).  So are the tenant key endpoints:
a key made there would make every ``/v1/*`` call ask for a key (tests/test_keys_fields.py
checks their schema against the server's checks).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import Gateway, MockProvider

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "positive_data_acceptance",
    ]
)
EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def routed_gateway(
    mock_provider: MockProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("schemathesis") / "gateway.toml"
    config.write_text('default_provider = "openai"\n')  # any model name reaches the mock
    server = Gateway(mock_provider, CACHE_ENABLED="true", AI_GATEWAY_CONFIG=str(config))
    yield server
    assert server.stop() == 0, server.log()


# A Responses request may name a stored response (previous_response_id, item_reference):
# one that does not exist is a 400, as at OpenAI, however well-formed the id.
# tests/test_api_responses_schema.py checks that operation's schema against its checks.
CONFIG = """
[[operations]]
include-path = "/v1/responses"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "429", "5xx"]
"""


def test_every_operation_holds_under_schemathesis(
    routed_gateway: Gateway, mock: MockProvider, tmp_path: Path
) -> None:
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run", routed_gateway.url + "/openapi.json",
        "--checks", CHECKS,
        "--mode", "positive",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic",
        "--exclude-path", "/admin/config",
        "--exclude-path-regex", "^/admin/keys",
        "--no-color",
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    report = run.stdout[-20000:] + run.stderr[-5000:]
    assert run.returncode == 0, report
    assert " passed" in run.stdout, report
    log = routed_gateway.log()
    assert "Traceback" not in log, log[-5000:]

"""Real processes for end-to-end tests: the bundled mock provider and the gateway.

Both run as subprocesses on free loopback ports and are spoken to over real HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from aigateway.provider_specs import BUILT_IN
from aigateway.server import MOCK_PATHS

TEST_KEY = "sk-test-0123456789abcdefSECRET"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The servers' logs of this test run, in one directory that conftest removes when every
# test passed (and keeps, saying where, when one failed).
LOG_DIR = Path(tempfile.mkdtemp(prefix="aigateway-test-logs-"))
# What a run leaves to look at (the dashboard's screenshots), kept whatever the outcome.
ARTIFACTS_DIR = Path(
    os.environ.get(
        "AIGATEWAY_TEST_ARTIFACTS", Path(__file__).parent.parent / "build" / "test-artifacts"
    )
)


# A loaded machine (a CI runner's two cores, or several suites at once) starts a gateway of
# two workers in well over the ~2 s it takes when idle; this bounds a hang, not speed.
READY_TIMEOUT_S = 60


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout_s} s:\n{log.read_text()}")


class _Process:
    def __init__(self, args: list[str], env: Mapping[str, str], ready_url: str) -> None:
        fd, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=LOG_DIR)
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                args, env=dict(env), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            _wait_http(ready_url, self.process, self.log_path, timeout_s=READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class MockProvider(_Process):
    def __init__(self, *extra_args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        args = [
            sys.executable, "-m", "aigateway.testing.mock_provider",
            "--host", "127.0.0.1", "--port", str(self.port), *extra_args,
        ]  # fmt: skip
        super().__init__(args, os.environ, self.url + "/_mock/stats")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(self.url + "/_mock/stats").json()
        return result

    def calls(self) -> int:
        return int(self.stats()["calls"])

    def reset(self) -> None:
        httpx.post(self.url + "/_mock/reset").raise_for_status()

    def faults(self, *next_faults: dict[str, Any], default: dict[str, Any] | None = None) -> None:
        body = {"next": list(next_faults), "default": default}
        httpx.post(self.url + "/_mock/faults", json=body).raise_for_status()


def gateway_env(mock: MockProvider | None, **overrides: str) -> dict[str, str]:
    """The environment of a test gateway: with ``mock``, every built-in provider is
    configured with a key and pointed at the mock's route for its wire format."""
    variables = ((f"{s.env_prefix}_", s.key_variable, s.base_url_variable) for s in BUILT_IN)
    ours = ("AI_GATEWAY_", *(name for names in variables for name in names))
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        MAX_WORKERS="2",
        LOG_LEVEL="info",
        INITIAL_DELAY_MS="10",
        MAX_DELAY_MS="200",
        REQUEST_TIMEOUT_SEC="10",
        # Most tests count provider calls; the cache tests turn it on themselves.
        CACHE_ENABLED="false",
        # Likewise circuit breaking and health probes (tests/test_ops_health.py).
        CIRCUIT_FAILURE_THRESHOLD="0",
        HEALTH_CHECK_INTERVAL_SEC="0",
    )
    # Tenant keys (and their store) of their own: a key one test makes must never make
    # /v1/* of another test's gateway ask for keys.
    env["AI_GATEWAY_DATA_DIR"] = tempfile.mkdtemp(prefix="data-", dir=LOG_DIR)
    if mock is not None:
        for spec in BUILT_IN:
            env[spec.base_url_variable] = mock.url + MOCK_PATHS[spec.wire_format]
            env[spec.key_variable] = TEST_KEY
    env.update(overrides)
    return env


class Gateway(_Process):
    def __init__(self, mock: MockProvider | None, host: str = "127.0.0.1", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.base_url = self.url + "/v1"
        full_env = gateway_env(mock, AI_GATEWAY_HOST=host, AI_GATEWAY_PORT=str(self.port), **env)
        args = [sys.executable, "-m", "aigateway.cli", "serve"]
        super().__init__(args, full_env, self.url + "/health")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30), **kwargs)


def chat_body(text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def wait_for(check: Callable[[], Any], timeout_s: float = 15.0, every_s: float = 0.05) -> Any:
    """``check()``'s first true value, or its last value once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)

"""What the paired benchmark scripts share: a free port, a gateway started and waited for."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aigateway.bench import bodies
from aigateway.bench.procs import free_port
from aigateway.bench.wrk import WrkResult, lua_script, parse_wrk_output, wrk_command

__all__ = (
    "PRICES", "free_port", "gateway_env", "priced_gateway", "serve_gateway", "start_mock",
    "wait_ready", "wrk_chat",
)  # fmt: skip

PRICES = '[prices."gpt-4o-mini"]\ninput = 0.15\noutput = 0.60\n'


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Return once ``url`` answers below 500; fail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def serve_gateway(
    python: str, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m aigateway.cli serve`` with ``env`` on ``port``, once it answers."""
    process = subprocess.Popen(
        [python, "-m", "aigateway.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health", process)
    return process, url


def priced_gateway(
    python: str, mock_url: str, workers: int, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """The tenant key benchmarks' gateway: the bench's flat key, priced ``gpt-4o-mini``
    (so budgets count), a data directory of its own, the cache on, no rate limit."""
    port = free_port()
    config = work / "gateway.toml"
    config.write_text(PRICES)
    env = gateway_env(port, mock_url, workers, work)
    env.update(
        AI_GATEWAY_API_KEYS=bodies.API_KEY,
        AI_GATEWAY_CONFIG=str(config),
        CACHE_ENABLED="true",
    )
    return serve_gateway(python, port, env)


def gateway_env(
    port: int, mock_url: str, workers: int, work: Path, drop: tuple[str, ...] = ()
) -> dict[str, str]:
    """This environment without the gateway's own settings (and ``drop``'s prefixes),
    plus a benchmark gateway's: ``port``, ``workers``, the mock as OpenAI with no rate
    limit, logs at warning, a data directory of its own in ``work``."""
    prefixes = ("AI_GATEWAY_", "OPENAI_", *drop)
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        AI_GATEWAY_PORT=str(port),
        MAX_WORKERS=str(workers),
        LOG_LEVEL="warning",
        OPENAI_BASE_URL=mock_url + "/v1",
        OPENAI_API_KEY=bodies.API_KEY,
        OPENAI_RPS="1000000",
        AI_GATEWAY_DATA_DIR=str(work / f"data-{port}"),
    )
    return env


def start_mock() -> tuple[subprocess.Popen[bytes], str]:
    """The bundled mock provider (0 ms) on a free port, and its URL (not waited for)."""
    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, "-m", "aigateway.cli", "mock-upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return mock, f"http://127.0.0.1:{port}"


def wrk_chat(
    url: str, secret: str, hits: bool, connections: int, seconds: int, work: Path
) -> WrkResult:
    """wrk (2 threads) on chat completions with ``secret``: one body (``hits``: cache
    hits) or a unique body each (misses); an error answer fails the run."""
    body = bodies.identical_body() if hits else bodies.unique_body_parts(secrets.token_hex(4))
    script = work / f"{secrets.token_hex(3)}.lua"
    script.write_text(lua_script(body, bodies.CHAT_PATH, {"Authorization": f"Bearer {secret}"}))
    command = wrk_command(shutil.which("wrk") or "wrk", url, str(script), connections, seconds, 2)
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    result = parse_wrk_output(run.stdout)
    if result.error_count:
        raise RuntimeError(f"wrk saw errors: {result.errors}")
    return result

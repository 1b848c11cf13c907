"""A worker on the default upstream client (aiohttp) never imports httpx.

httpx's package imports its command line, and with it click, rich and pygments: about a
hundred and fifty modules and 6-8 MB of private memory in every worker process
(docs/benchmarks.md, issue 19's memory).  The gateway imports httpx only when
``UPSTREAM_CLIENT=httpx`` chooses it.  Checked in a fresh interpreter, as a worker starts:
the app is built, its lifespan run and a request served over ASGI (Starlette's test
client would import httpx itself), then its modules are listed.
"""

from __future__ import annotations

import os
import subprocess
import sys

WORKER = """
import asyncio, sys
from aigateway.app import create_app
from aigateway.config import load_settings

# a provider, so that the worker makes its upstream client (it calls nobody here)
settings = load_settings({"UPSTREAM_CLIENT": CHOSEN, "OPENAI_API_KEY": "sk-test"})
app = create_app(settings)

async def serve() -> int:
    inbox = [{"type": "lifespan.startup"}]
    started = asyncio.Event()
    finished = asyncio.Event()

    async def receive():
        if inbox:
            return inbox.pop()
        await finished.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message):
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, receive, send))
    await started.wait()
    answer = []

    async def request():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def respond(message):
        answer.append(message)

    scope = {"type": "http", "method": "GET", "path": "/admin/stats", "headers": [],
             "query_string": b"", "client": ("127.0.0.1", 40000), "server": ("t", 80),
             "scheme": "http", "http_version": "1.1", "root_path": ""}
    await app(scope, request, respond)
    finished.set()
    await lifespan
    return answer[0]["status"]

status = asyncio.run(serve())
assert status == 200, status
names = ("httpx", "click", "rich", "pygments")
print(" ".join(sorted(m for m in sys.modules if m.partition(".")[0] in names)))
"""


def _modules_of_a_worker(client: str) -> str:
    env = {name: value for name, value in os.environ.items() if name != "UPSTREAM_CLIENT"}
    script = WORKER.replace("CHOSEN", repr(client))
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_a_worker_on_the_default_client_serves_without_importing_httpx() -> None:
    assert _modules_of_a_worker("aiohttp") == ""


def test_a_worker_that_chooses_httpx_imports_it() -> None:
    assert "httpx" in _modules_of_a_worker("httpx").split()

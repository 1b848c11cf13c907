"""A worker without ``REDIS_URL`` never imports redis-py.

redis-py imports OpenTelemetry's SDK when that is installed: together about a hundred
and fifty modules, a tenth of a second of CPU and ten megabytes in every worker process
(docs/benchmarks.md, hygiene).  A single node has no use for either, so the gateway
imports redis-py only when ``REDIS_URL`` is set.  Checked in a fresh interpreter, as a
worker starts: the app is built and its lifespan run, then its modules are listed.
"""

from __future__ import annotations

import os
import subprocess
import sys

WORKER = """
import sys
from starlette.testclient import TestClient
from aigateway.app import create_app
from aigateway.config import Settings

with TestClient(create_app(Settings(workers=1)), client=("127.0.0.1", 40000)) as client:
    assert client.get("/admin/stats").status_code == 200  # the cluster's section too
print(" ".join(sorted(m for m in sys.modules if m.partition(".")[0] == "redis")))
"""


def test_a_worker_without_redis_url_builds_and_serves_without_importing_redis() -> None:
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    run = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", f"redis-py was imported: {run.stdout.strip()}"

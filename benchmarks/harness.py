"""What the paired benchmark scripts share: a free port, and waiting for a server."""

from __future__ import annotations

import subprocess
import time

import httpx

from aigateway.bench.procs import free_port

__all__ = ("free_port", "wait_ready")


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

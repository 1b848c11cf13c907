"""``--profile DIR``: py-spy samples one gateway worker while the load runs.

py-spy is optional (``pip install 'aigateway[profile]'``). It runs as a child of the bench,
without pausing the worker (``--nonblocking``), and writes a raw profile that
:mod:`aigateway.bench.profile` turns into a text summary. It starts ``PICK_AFTER_S`` into
the load, on the worker that used the most CPU until then: with one connection (the
overhead scenario) only one worker serves, and profiling the idle one would be useless.
It samples for the load's duration, so it ends that much after the load (an idle worker
adds no samples). The summary's per-request figures scale the measurement's requests by
the share of the target's CPU during the load that the recording saw. A profile is a
diagnostic: when py-spy fails (e.g. ptrace is not permitted) the measurement goes on
without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from aigateway.bench import procs
from aigateway.bench.profile import parse_raw, render_summary, summarise

RATE_HZ = 250
PICK_AFTER_S = 0.5
MISSING = (
    "--profile needs py-spy, which is not installed: "
    "pip install 'aigateway[profile]' (or: pip install py-spy)"
)


def find_pyspy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a venv that is not activated)."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if os.access(beside, os.X_OK) else None


def _main_thread_cpu(pid: int) -> float:
    return procs.thread_cpu_seconds(pid, pid) or 0.0


class Profiler:
    """py-spy against one worker of the server ``target`` during one measurement: call
    :meth:`tick` with the load's elapsed time, :meth:`finish` after the load, and always
    :meth:`stop` (it kills py-spy if it still runs)."""

    def __init__(self, pyspy: str, target: int, seconds: int, out_dir: Path, stem: str) -> None:
        self.pyspy = pyspy
        self.target = target
        self.seconds = seconds
        self.raw, self.summary, self.log = (
            out_dir / f"{stem}{ext}" for ext in (".raw", ".txt", ".log")
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self.worker = 0
        self._cpu_at_load = {pid: procs.cpu_seconds(pid) for pid in procs.spawned_workers(target)}
        self._target_cpu_at_load = procs.cpu_seconds(target)
        self._cpu_at_start: tuple[float, float] = (0.0, 0.0)
        if not self._cpu_at_load:
            self.error = f"no worker process (spawn_main) under pid {target}"

    def tick(self, elapsed_s: float) -> None:
        if self.process is None and self.error is None and elapsed_s >= PICK_AFTER_S:
            self._start()

    def _start(self) -> None:
        used = {pid: procs.cpu_seconds(pid) - cpu for pid, cpu in self._cpu_at_load.items()}
        self.worker = max(sorted(used), key=lambda pid: used[pid])
        command = [
            self.pyspy, "record", "--pid", str(self.worker), "--duration", str(self.seconds),
            "--rate", str(RATE_HZ), "--format", "raw", "--nonblocking", "--threads",
            "--output", str(self.raw),
        ]  # fmt: skip
        self._cpu_at_start = (procs.cpu_seconds(self.worker), _main_thread_cpu(self.worker))
        try:
            with self.log.open("wb") as out:
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            self.error = f"cannot run {self.pyspy}: {exc}"

    def finish(self, requests: int, timeout_s: float) -> tuple[dict[str, Any], float]:
        """Wait for py-spy and write the summary: (the row's ``profile`` entry, py-spy's
        own CPU seconds). On failure the entry holds ``error`` (and py-spy's ``log``)
        instead of the files."""
        entry: dict[str, Any] = {}
        if self.process is None:
            entry["error"] = self.error or f"the load ended before {PICK_AFTER_S:g} s"
            return entry, 0.0
        # CPU of the worker while recorded against the target's during the whole load
        worker_cpu0, main_cpu0 = self._cpu_at_start
        worker_cpu = procs.cpu_seconds(self.worker) - worker_cpu0
        target_cpu = procs.cpu_seconds(self.target) - self._target_cpu_at_load
        main_cpu = _main_thread_cpu(self.worker) - main_cpu0
        before = procs.generator_cpu_seconds()  # py-spy is reaped below: its CPU counts here
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            entry["error"] = f"py-spy still ran after {timeout_s:g} s"
            return entry, 0.0
        own_cpu = procs.generator_cpu_seconds() - before
        entry["worker_pid"] = str(self.worker)
        if code != 0 or not self.raw.exists():
            entry["error"] = f"py-spy exited with code {code}: {self._log_tail()}"
            entry["log"] = str(self.log)
            return entry, own_cpu
        entry["raw"] = str(self.raw)
        summary = summarise(
            parse_raw(self.raw.read_text(errors="replace")),
            RATE_HZ,
            requests,
            covered=min(1.0, worker_cpu / target_cpu) if target_cpu > 0 else None,
            main_thread_cpu_s=main_cpu,
        )
        heading = [f"py-spy profile of gateway worker {self.worker} ({self.raw.name})"]
        self.summary.write_text(render_summary(summary, heading))
        self.log.unlink(missing_ok=True)  # py-spy's chatter; kept only when it failed
        entry["summary"] = str(self.summary)
        per_request = summary.main_us_per_served or summary.main_us_per_request
        entry["main_cpu_us_per_request"] = per_request
        return entry, own_cpu

    def _log_tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return "(no output)"
        return " / ".join(text.splitlines()[-3:]) or "(no output)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

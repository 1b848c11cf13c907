"""The ``hostile`` scenario around its attacker: starting and stopping the attacker process
(:class:`Attacker`, see ``bench/attacker.py``), and the scenario's table and goals.

A hostile measurement is the same closed-loop load as its quiet twin, on the same gateway
process, while the attacker holds its connections. The goals: the normal clients' p99
within 2x of the quiet run's, no error for them, every worker under 150 MB: its private
memory (``RssAnon``, the largest sampled each second while the load ran), as for the
soak. ``VmRSS`` is shown beside it; it also counts the pages of the node's shared cache a
worker has touched, which grow with every unique request stored and exist once for the
node, not once per worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from aigateway.bench import attacker, procs
from aigateway.bench.report import Row
from aigateway.bench.scenarios import Hostile

P99_RATIO_LIMIT = 2.0
WORKER_RSS_LIMIT_MB = 150.0
MEMORY_SAMPLE_S = 1.0


class AttackerError(RuntimeError):
    pass


@dataclass
class Attacker:
    process: subprocess.Popen[bytes]
    out_path: Path
    ready: dict[str, Any]

    @classmethod
    def start(
        cls, python: str, url: str, hostile: Hostile, work_dir: Path, timeout_s: float = 180.0
    ) -> Attacker:
        """Start it against the server at ``url``; back once its connections are open."""
        out_path = work_dir / f"attacker-{os.urandom(3).hex()}.out"
        args = [
            python, "-m", "aigateway.bench.attacker", "--port", str(urlsplit(url).port),
            "--idle", str(hostile.idle), "--slowloris", str(hostile.slowloris),
            "--slow-readers", str(hostile.slow_readers),
        ]  # fmt: skip
        with out_path.open("wb") as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self = cls(process, out_path, {})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self._line(attacker.READY)
            if line is not None:
                self.ready = line
                return self
            if process.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise AttackerError(f"the attacker did not get ready:\n{self._output()[-1000:]}")

    def _output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def _line(self, prefix: str) -> dict[str, Any] | None:
        for line in self._output().splitlines():
            if line.startswith(prefix):
                found: dict[str, Any] = orjson.loads(line[len(prefix) :])
                return found
        return None

    def cpu_seconds(self) -> float:
        return procs.cpu_seconds(self.process.pid)

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Close everything it holds: its summary (what it held, opened, saw closed)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AttackerError("the attacker did not stop in time") from None
        summary = self._line(attacker.SUMMARY)
        if summary is None:
            raise AttackerError(f"the attacker printed no summary:\n{self._output()[-1000:]}")
        return {**summary, "opening_s": self.ready.get("opening_s")}

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


# --- figures and goals (no I/O) -----------------------------------------------------------


def _quiet_twin(results: Sequence[Row], row: Row) -> Row | None:
    for other in results:
        if (
            other["scenario"] == "hostile"
            and not other["extra"].get("attacker")
            and other["concurrency"] == row["concurrency"]
            and other["mock_latency_ms"] == row["mock_latency_ms"]
            and other["workers"] == row["workers"]
        ):
            return other
    return None


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def hostile_goals(results: Sequence[Row]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for row in (r for r in results if r["scenario"] == "hostile" and r["extra"].get("attacker")):
        quiet = _quiet_twin(results, row)
        p99, base = row.get("p99_ms"), None if quiet is None else quiet.get("p99_ms")
        ratio = None if p99 is None or not base else p99 / base
        out.append(
            {
                "goal": "hostile: normal clients' p99 against the quiet run's",
                "measured": "-" if ratio is None else f"{p99:.1f} ms vs {base:.1f} ({ratio:.2f}x)",
                "target": f"<= {P99_RATIO_LIMIT:g}x",
                "status": _status(None if ratio is None else ratio <= P99_RATIO_LIMIT),
            }
        )
        out.append(
            {
                "goal": "hostile: errors of normal clients",
                "measured": f"{row['errors']} of {row['requests']}",
                "target": "0",
                "status": _status(row["errors"] == 0),
            }
        )
        largest, rss = row["extra"].get("rss_anon_max_mb"), row["extra"].get("rss_max_mb")
        shown = "" if rss is None else f" (RSS with shared cache pages {rss:.1f})"
        out.append(
            {
                "goal": "hostile: private memory of every worker (largest sample)",
                "measured": "-" if largest is None else f"{largest:.1f} MB{shown}",
                "target": f"< {WORKER_RSS_LIMIT_MB:g} MB",
                "status": _status(None if largest is None else largest < WORKER_RSS_LIMIT_MB),
            }
        )
    return out

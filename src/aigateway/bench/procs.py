"""Processes the benchmark starts, and what /proc tells about them.

Every server (mock provider, gateway, baselines) runs in its own session (process group)
on a free loopback port; :meth:`Service.stop` ends it with SIGTERM, then SIGKILL to that
group only. CPU use is read from ``/proc/<pid>/stat`` (user + system time of a process and
all its live descendants, plus what their reaped children used), memory from
``/proc/<pid>/status``. Load generators are short-lived children: their CPU comes from
``getrusage(RUSAGE_CHILDREN)`` around their run.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import orjson

HOST = "127.0.0.1"
_TICKS = os.sysconf("SC_CLK_TCK")
# urllib without proxies: the bench only ever speaks to 127.0.0.1
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout_s: float = 5.0) -> bytes:
    with _OPENER.open(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def http_post(url: str, timeout_s: float = 5.0) -> bytes:
    request = urllib.request.Request(url, data=b"", method="POST")
    with _OPENER.open(request, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


# --- /proc --------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or parentheses
    return raw[raw.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children = children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its descendants (reaped ones included)."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # after "(comm)": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / _TICKS


def memory_bytes(pid: int) -> dict[str, int]:
    """``VmRSS`` (all resident memory) and its parts ``RssAnon`` (private: the heap),
    ``RssFile`` and ``RssShmem`` (mapped files, e.g. the cache's shared segment) of a
    process, in bytes; empty if it is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def thread_cpu_seconds(pid: int, tid: int) -> float | None:
    """User + system CPU seconds of one thread (the main thread's ``tid`` is ``pid``)."""
    try:
        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    return memory_bytes(pid).get("VmRSS", 0)


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def spawned_workers(pid: int) -> list[int]:
    """The worker processes Granian spawned under ``pid`` (multiprocessing's
    ``spawn_main`` children), lowest id first; its ``resource_tracker`` child is no worker."""
    children = children_map().get(pid, [])
    return sorted(child for child in children if "spawn_main" in cmdline(child))


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """CPU seconds of the whole machine since boot (all cores added up), from /proc/stat."""

    busy: float  # everything but idle and iowait
    interrupts: float  # irq + softirq: loopback traffic is mostly processed here
    total: float


def machine_cpu() -> MachineCpu:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return MachineCpu((total - idle) / _TICKS, (fields[5] + fields[6]) / _TICKS, total / _TICKS)


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_pct(interval_s: float = 0.5) -> float:
    """How busy the machine is now, in % of one core (200 = two cores fully busy)."""
    before = machine_cpu()
    time.sleep(interval_s)
    after = machine_cpu()
    return 100.0 * (after.busy - before.busy) / interval_s


def generator_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def meminfo_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


# --- services -----------------------------------------------------------------------------


@dataclass
class Service:
    """A server process the bench started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        url: str,
        ready_path: str,
        log_dir: Path,
        timeout_s: float = 60.0,
    ) -> Self:
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(args),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
            )
        service = cls(name, process, url, log_path)
        try:
            service._wait_ready(url + ready_path, timeout_s)
        except BaseException:
            service.stop()
            raise
        return service

    def _wait_ready(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode} before it was "
                    f"ready; its log:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                http_get(url, timeout_s=1.0)
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name} not ready after {timeout_s:g} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def worker_pids(self) -> list[int]:
        """The worker processes Granian spawned, else the direct children, else the process
        itself (a single-process server)."""
        return spawned_workers(self.pid) or children_map().get(self.pid, []) or [self.pid]

    def worker_rss_bytes(self) -> tuple[int, int]:
        """(sum of the workers' resident memory, number of workers)."""
        pids = self.worker_pids()
        return sum(rss_bytes(pid) for pid in pids), len(pids)

    def worker_private_bytes(self) -> int:
        """The sum of the workers' private resident memory (``RssAnon``): ``VmRSS``
        without the pages of files and shared segments, such as the node's cache."""
        return sum(memory_bytes(pid).get("RssAnon", 0) for pid in self.worker_pids())

    def worker_mapped_bytes(self) -> int:
        """The sum of the rest of the workers' ``VmRSS``: pages of mapped files
        (``RssFile``: the interpreter, extension modules, shared libraries) and of shared
        segments (``RssShmem``: the node's cache in /dev/shm, the shared-memory segment),
        each page counted in every worker that touched it, though one copy serves all."""
        return sum(
            figures.get("RssFile", 0) + figures.get("RssShmem", 0)
            for figures in map(memory_bytes, self.worker_pids())
        )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        # whatever is left of the group we created (e.g. workers of a killed main process)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait()


class MockService(Service):
    def calls(self) -> int:
        stats = orjson.loads(http_get(self.url + "/_mock/stats"))
        return int(stats["calls"])

    def call_times(self) -> list[float]:
        """Wall-clock arrival times of the mock's most recent calls (10,000 at most)."""
        stats = orjson.loads(http_get(self.url + "/_mock/stats"))
        return [float(t) for t in stats.get("call_times", [])]

    def reset(self) -> None:
        http_post(self.url + "/_mock/reset")


def run_generator(
    args: Sequence[str],
    out_path: Path,
    timeout_s: float,
    tick: Callable[[float], None] | None = None,
) -> tuple[int, str, float]:
    """Run a load generator to its end: (exit code, its stdout, its CPU seconds).

    Killed (with its process group) if it outlives ``timeout_s`` or on any interruption.
    """
    before = generator_cpu_seconds()
    started = time.monotonic()
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                raise ServiceError(f"{Path(args[0]).name} did not finish in {timeout_s:g} s")
            if tick is not None:
                tick(elapsed)
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    cpu = generator_cpu_seconds() - before
    return process.returncode, out_path.read_text(errors="replace"), cpu

"""wrk, the load generator: finding or installing it, its Lua script, and reading its output.

The generated Lua script sends POST bodies (one fixed body, or a unique body per request
with a per-thread counter in the message text) and, in wrk's ``done()`` hook, prints one
line ``AIGATEWAY_BENCH_JSON {...}`` with the request count, duration, errors and latency
percentiles in microseconds. :func:`parse_wrk_output` reads that line and falls back to
wrk's own ``--latency`` text report when the line is missing or broken.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aigateway.bench.bodies import MixedBodies

JSON_MARKER = "AIGATEWAY_BENCH_JSON "
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
INSTALL_HINT = "install it with `sudo apt-get install wrk` (Debian/Ubuntu) or your package manager"


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed nothing we can read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]  # connect, read, write, timeout, status (HTTP status > 399)
    latency_ms: dict[str, float]  # "p50", "p90", "p99", ... "mean", "max"
    source: str = "json"  # "json" (the done() hook) or "text" (wrk's --latency report)
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


# --- finding wrk --------------------------------------------------------------------------


def ensure_wrk(install: bool = True, say: Callable[[str], None] | None = None) -> str:
    """Path of the wrk binary; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise WrkError(f"wrk is not installed: {INSTALL_HINT}")
    if say is not None:
        say("wrk is not installed: installing it with `apt-get install -y wrk`")
    _apt("install", "-y", "wrk")
    if shutil.which("wrk") is None:
        _apt("update")
        _apt("install", "-y", "wrk")
    found = shutil.which("wrk")
    if found is None:
        raise WrkError(f"wrk is not installed and `apt-get install -y wrk` failed: {INSTALL_HINT}")
    return found


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wrk_version(path: str) -> str:
    try:
        run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (run.stdout or run.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "unknown"


def wrk_command(
    wrk: str, url: str, script: str, concurrency: int, duration_s: int, threads: int
) -> list[str]:
    return [
        wrk,
        f"-t{max(1, min(threads, concurrency))}",
        f"-c{concurrency}",
        f"-d{duration_s}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        script,
        url,
    ]


# --- the Lua script -----------------------------------------------------------------------


def lua_string(data: bytes) -> str:
    """A Lua string literal holding exactly ``data``."""
    out = ['"']
    for byte in data:
        if byte in (0x22, 0x5C):  # " and \
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


_DONE_HOOK = """
local function num(x)
  if x ~= x or x == math.huge or x == -math.huge then return "null" end
  return string.format("%.3f", x)
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, p in ipairs({ PERCENTILE_LIST }) do
    parts[#parts + 1] = string.format('"%s":%s', tostring(p), num(latency:percentile(p)))
  end
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%s,"max":%s,"mean":%s,"stdev":%s,"percentiles":{%s}}}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    num(latency.min), num(latency.max), num(latency.mean), num(latency.stdev),
    table.concat(parts, ",")))
end
"""


def lua_script(
    body: bytes | tuple[bytes, bytes] | MixedBodies,
    path: str,
    headers: dict[str, str] | None = None,
) -> str:
    """The wrk script: POST ``body`` to ``path``; a (prefix, suffix) pair makes every body
    unique by putting ``<thread>-<counter>`` between the two parts; :class:`MixedBodies`
    send every ``every``-th request with ``<counter / every mod pool>`` between the repeated
    parts instead (the same ``pool`` bodies in every thread)."""
    lines = [
        "-- generated by aigateway bench",
        'wrk.method = "POST"',
        f"wrk.path = {lua_string(path.encode())}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}")
    if isinstance(body, bytes):
        lines.append(f"wrk.body = {lua_string(body)}")
    elif isinstance(body, MixedBodies):
        lines += _mixed_lua(body)
    else:
        prefix, suffix = body
        lines += [
            f"local prefix = {lua_string(prefix)}",
            f"local suffix = {lua_string(suffix)}",
            *_THREAD_IDS,
            "local counter = 0",
            "function request()",
            "  counter = counter + 1",
            "  return wrk.format(nil, nil, nil, prefix .. tid .. '-' .. counter .. suffix)",
            "end",
        ]
    percentiles = ", ".join(f"{p:g}" for p in PERCENTILES)
    hook = _DONE_HOOK.replace("PERCENTILE_LIST", percentiles).replace("MARKER", JSON_MARKER)
    return "\n".join(lines) + "\n" + hook


# Each wrk thread gets its own id (a global of its Lua state), so bodies differ per thread.
_THREAD_IDS = (
    "local made = 0",
    "function setup(thread)",
    "  made = made + 1",
    '  thread:set("tid", made)',
    "end",
)


def _mixed_lua(bodies: MixedBodies) -> list[str]:
    (prefix, suffix), (rprefix, rsuffix) = bodies.unique, bodies.repeated
    return [
        f"local prefix = {lua_string(prefix)}",
        f"local suffix = {lua_string(suffix)}",
        f"local rprefix = {lua_string(rprefix)}",
        f"local rsuffix = {lua_string(rsuffix)}",
        *_THREAD_IDS,
        "local counter = 0",
        "function request()",
        "  counter = counter + 1",
        f"  if counter % {bodies.every} == 0 then",
        f"    local pick = math.floor(counter / {bodies.every}) % {bodies.pool}",
        "    return wrk.format(nil, nil, nil, rprefix .. pick .. rsuffix)",
        "  end",
        "  return wrk.format(nil, nil, nil, prefix .. tid .. '-' .. counter .. suffix)",
        "end",
    ]


# --- reading the output -------------------------------------------------------------------


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_NUMBER = r"(\d+(?:\.\d+)?)"
_PERCENTILE_LINE = re.compile(rf"^\s*{_NUMBER}%\s+{_NUMBER}(us|ms|s|m|h)\s*$", re.MULTILINE)
_SUMMARY_LINE = re.compile(rf"(\d+) requests in {_NUMBER}(us|ms|s|m|h),")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_LATENCY_ROW = re.compile(rf"^\s*Latency\s+{_NUMBER}(us|ms|s|m|h)\s+{_NUMBER}(us|ms|s|m|h)"
                          rf"\s+{_NUMBER}(us|ms|s|m|h)", re.MULTILINE)  # fmt: skip


def _pkey(p: float) -> str:
    return f"p{p:g}"


def parse_wrk_output(stdout: str) -> WrkResult:
    """The result of one wrk run, from its JSON line or else from its text report."""
    notes: list[str] = []
    for line in reversed(stdout.splitlines()):
        if line.startswith(JSON_MARKER):
            try:
                return _from_json(orjson.loads(line[len(JSON_MARKER) :]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                notes.append(f"unreadable JSON line from the done() hook ({exc}); used the text")
            break
    else:
        notes.append("no JSON line from the done() hook; used wrk's text report")
    result = _from_text(stdout)
    return WrkResult(
        result.requests, result.duration_s, result.errors, result.latency_ms, "text", notes
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return int(value)


def _from_json(data: Any) -> WrkResult:
    if not isinstance(data, dict):
        raise TypeError("the JSON line is not an object")
    errors = {k: _int(data["errors"][k]) for k in ("connect", "read", "write", "timeout", "status")}
    requests = _int(data["requests"])
    duration_s = _int(data["duration_us"]) / 1e6
    if duration_s <= 0:
        raise ValueError("the run lasted no time")
    lat = data["latency_us"]
    latency: dict[str, float] = {}
    for name in ("min", "max", "mean", "stdev"):
        value = lat.get(name)
        if isinstance(value, int | float) and math.isfinite(value):
            latency[name] = value / 1000.0
    for key, value in lat["percentiles"].items():
        if value is not None:
            latency[_pkey(float(key))] = float(value) / 1000.0
    if requests == 0:
        latency = {}
    return WrkResult(requests, duration_s, errors, latency)


def _from_text(stdout: str) -> WrkResult:
    summary = _SUMMARY_LINE.search(stdout)
    if summary is None:
        tail = stdout.strip()[-500:] or "(nothing)"
        raise WrkError(f"cannot read wrk's output: no 'N requests in T' line in:\n{tail}")
    requests = int(summary.group(1))
    duration_s = float(summary.group(2)) * _TIME_UNITS[summary.group(3)] / 1000.0
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    sockets = _SOCKET_ERRORS.search(stdout)
    if sockets:
        for name, value in zip(
            ("connect", "read", "write", "timeout"), sockets.groups(), strict=True
        ):
            errors[name] = int(value)
    non_2xx = _NON_2XX.search(stdout)
    if non_2xx:
        errors["status"] = int(non_2xx.group(1))
    latency: dict[str, float] = {}
    for match in _PERCENTILE_LINE.finditer(stdout):
        latency[_pkey(float(match.group(1)))] = float(match.group(2)) * _TIME_UNITS[match.group(3)]
    row = _LATENCY_ROW.search(stdout)
    if row:
        latency["mean"] = float(row.group(1)) * _TIME_UNITS[row.group(2)]
        latency["stdev"] = float(row.group(3)) * _TIME_UNITS[row.group(4)]
        latency["max"] = float(row.group(5)) * _TIME_UNITS[row.group(6)]
    return WrkResult(requests, duration_s, errors, latency if requests else {})

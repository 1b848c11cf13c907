"""What Redis did during a measurement: its own counters, and the commands the gateway sent.

Two sources, both on a plain socket to the bench's own ``redis-server``:

* ``INFO commandstats`` before and after (:func:`commandstats`): every command Redis ran,
  by name, the commands a script runs inside Redis included (one ``EVALSHA`` that reads
  and writes two keys counts 1 + 2);
* ``MONITOR`` while the load runs (:class:`CommandMonitor`, a thread of the bench): every
  command a client sent, which Redis reports with its arguments, so each is put in a class
  by the first of the gateway's keys it names (:func:`key_class`): ``limits`` (the
  providers' global buckets, ``limit:<provider>``), ``cache`` (entries and in-flight
  claims), ``membership`` (heartbeats), ``other coordination`` (pauses, health, settings,
  the cache's generation) or ``other`` (no key: ``SCRIPT LOAD``, ``PING``...). A script's
  own commands (reported from ``lua``) count in the class of the script that ran them.

MONITOR costs Redis a copy of every command, so only the two-node steps and the hits of
one node (next to no command: their request path and the node agent's told apart) use
it; the misses comparing one node with and without Redis read the counters alone. The bench's own
``INFO`` and ``MONITOR`` are left out of both.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aigateway.cluster.keys import Keys

HOST = "127.0.0.1"
LIMITS, CACHE, MEMBERSHIP = "limits", "cache", "membership"
COORDINATION, OTHER = "other coordination", "other"
CLASSES = (LIMITS, CACHE, MEMBERSHIP, COORDINATION, OTHER)
BENCH_COMMANDS = frozenset({"info", "monitor"})  # the bench's own, never the gateway's


# --- INFO commandstats --------------------------------------------------------------------


def parse_commandstats(text: str) -> dict[str, int]:
    """``cmdstat_get:calls=4,usec=...`` lines -> {"get": 4}; subcommands keep their
    ``|`` name (``script|load``)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, fields = line.partition(":")
        if not name.startswith("cmdstat_"):
            continue
        for field in fields.split(","):
            key, _, value = field.partition("=")
            if key == "calls":
                out[name.removeprefix("cmdstat_")] = int(value)
    return out


def commands_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command from one snapshot to the next, the bench's own left out."""
    out = {
        name: calls - before.get(name, 0)
        for name, calls in after.items()
        if name not in BENCH_COMMANDS and calls > before.get(name, 0)
    }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _read_reply(sock: socket.socket) -> bytes:
    """One bulk-string reply (``$<n>\\r\\n<n bytes>\\r\\n``), as INFO sends."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n")
    if not head.startswith(b"$"):
        raise ConnectionError(f"unexpected reply from redis: {head[:200]!r}")
    size = int(head[1:])
    while len(rest) < size + 2:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        rest += chunk
    return rest[:size]


def commandstats(port: int, timeout_s: float = 5.0) -> dict[str, int]:
    """Calls per command since Redis started (``INFO commandstats``)."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        return parse_commandstats(_read_reply(sock).decode(errors="replace"))


# --- MONITOR ------------------------------------------------------------------------------


def parse_monitor_line(line: bytes) -> tuple[str, list[bytes]] | None:
    """``+1700000000.1 [0 127.0.0.1:5555] "EVALSHA" "ab" "1" "k"`` -> (``127.0.0.1:5555``,
    [b"EVALSHA", b"ab", b"1", b"k"]); a script's commands come from ``lua``. None for any
    other line (``+OK``). Arguments are unescaped as Redis quotes them (``\\"``, ``\\\\``,
    ``\\n``, ``\\xHH``...)."""
    start = line.find(b" [")
    end = line.find(b"] ", start)
    if not line.startswith(b"+") or start < 0 or end < 0:
        return None
    source = line[start + 2 : end].decode(errors="replace").split(" ", 1)[-1]
    args: list[bytes] = []
    i, n = end + 2, len(line)
    escapes = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("a"): b"\a", ord("b"): b"\b"}
    while i < n:
        if line[i] != ord('"'):
            i += 1
            continue
        i += 1
        arg = bytearray()
        while i < n and line[i] != ord('"'):
            if line[i] == ord("\\") and i + 1 < n:
                nxt = line[i + 1]
                if nxt == ord("x") and i + 3 < n:
                    arg.append(int(line[i + 2 : i + 4], 16))
                    i += 4
                    continue
                arg += escapes.get(nxt, bytes((nxt,)))
                i += 2
                continue
            arg.append(line[i])
            i += 1
        args.append(bytes(arg))
        i += 1
    return (source, args) if args else None


def key_class(args: Sequence[bytes], keys: Keys) -> str:
    """The class of a command, by the first of the gateway's keys among its arguments."""
    coordination = keys.coordination.encode()
    entries = (keys.cache_entry(b"").encode()[:-2], keys.in_flight(b"").encode()[:-2])
    limit = _segment(keys, keys.coordination_key("limit"))
    members = {_segment(keys, keys.nodes()), _segment(keys, keys.node("x"))}
    for arg in args[1:]:
        if arg.startswith(coordination):
            segment = _segment(keys, arg.decode(errors="replace"))
            if segment == limit:
                return LIMITS
            return MEMBERSHIP if segment in members else COORDINATION
        if arg.startswith(entries):
            return CACHE
    return OTHER


def _segment(keys: Keys, key: str) -> str:
    return key[len(keys.coordination) :].split(":", 1)[0]


class CommandTally:
    """Counts of monitored commands: sent by clients (by class and by name), and run
    (a script's own commands added to its class). No I/O: feed it MONITOR's lines."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.sent: Counter[str] = Counter()
        self.run: Counter[str] = Counter()
        self.sent_by_command: Counter[str] = Counter()
        self._last = OTHER

    def feed(self, line: bytes) -> None:
        parsed = parse_monitor_line(line)
        if parsed is None:
            return
        source, args = parsed
        if source == "lua":
            self.run[self._last] += 1
            return
        name = args[0].decode(errors="replace").lower()
        if name in BENCH_COMMANDS:
            return
        self._last = key_class(args, self.keys)
        self.sent[self._last] += 1
        self.run[self._last] += 1
        self.sent_by_command[name] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "sent": {name: self.sent[name] for name in CLASSES},
            "run": {name: self.run[name] for name in CLASSES},
            "sent_by_command": dict(self.sent_by_command.most_common()),
        }


class CommandMonitor:
    """``MONITOR`` on its own connection and thread, from :meth:`start` to :meth:`stop`."""

    def __init__(self, port: int, keys: Keys) -> None:
        self.tally = CommandTally(keys)
        self._sock = socket.create_connection((HOST, port), timeout=5.0)
        self._sock.sendall(b"MONITOR\r\n")
        self._thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self._stopping = threading.Event()
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            self._sock.settimeout(0.2)
            while not self._stopping.is_set():
                try:
                    chunk = self._sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\r\n")
                for line in lines:
                    self.tally.feed(line)

    def stop(self) -> dict[str, Any]:
        self._stopping.set()
        self._thread.join(timeout=5.0)
        with contextlib.suppress(OSError):
            self._sock.close()
        return self.tally.summary()

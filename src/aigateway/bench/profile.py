"""Summaries of py-spy's raw profiles (``--profile DIR``), as text (no I/O here).

py-spy's ``--format raw`` writes one line per distinct stack: ``frame;frame;... COUNT``,
outermost frame first. With ``--threads`` the first frame names the thread:
``thread (TID): MainThread``, or ``thread (TID)`` for a thread without a name. The others
look like ``func (path/to/file.py:LINE)``. Without ``--idle`` only samples of a thread
py-spy saw running are written, so samples / rate approximates that thread's CPU time
(samples py-spy could not read are missing; the summary sets the thread's CPU time from
/proc beside it as a check).

Per-request figures divide by the requests the recording saw, estimated as the
measurement's requests times ``covered``: the profiled worker's CPU during the recording
over the whole target's CPU during the load (one worker of several, and py-spy starts a
moment after the load; workers spend about the same per request).

A function is its name and file (the line moves within it). Self time counts the samples
whose innermost frame is the function; inclusive time the samples whose stack holds it
anywhere (once per stack, so recursion is not counted twice).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TOP = 25
LITTLE_SHARE = 0.1  # of the target's CPU: a recording that saw less is a poor sample
OURS = re.compile(r"[(/]aigateway/")  # the file of a frame of the gateway's own code


@dataclass(frozen=True, slots=True)
class Stack:
    thread: str  # "" when the profile was recorded without --threads
    frames: tuple[str, ...]  # outermost first
    count: int


def parse_raw(text: str) -> list[Stack]:
    """The stacks of a raw py-spy file; lines that do not end with a count are skipped."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(stack.split(";"))
        thread = ""
        if frames[0].startswith("thread ("):
            thread, frames = frames[0], frames[1:]
        stacks.append(Stack(thread, frames, int(count)))
    return stacks


def is_main_thread(thread: str) -> bool:
    """The main thread (the event loop's); all of a profile without thread names."""
    return thread == "" or thread.endswith(": MainThread")


def function_of(frame: str) -> str:
    """``func (file)``: the frame without its line number."""
    at = frame.rfind(" (")
    if at < 0 or not frame.endswith(")"):
        return frame
    where = frame[at + 2 : -1]
    file, _, line = where.rpartition(":")
    return f"{frame[:at]} ({file})" if file and line.isdigit() else frame


def is_ours(function: str) -> bool:
    return OURS.search(function) is not None


@dataclass(frozen=True, slots=True)
class FunctionTime:
    function: str
    samples: int
    share: float  # of the main thread's samples
    us_per_request: float | None


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    rate_hz: float
    samples: int  # every thread
    main_samples: int
    requests: int  # of the whole measurement (every worker)
    covered: float | None  # of the target's CPU during the load, what the recording saw
    main_thread_cpu_s: float | None  # the main thread's CPU time from /proc, as a check
    by_self: list[FunctionTime]
    ours_inclusive: list[FunctionTime]

    @property
    def main_share(self) -> float | None:
        return self.main_samples / self.samples if self.samples else None

    @property
    def main_cpu_s(self) -> float:
        return self.main_samples / self.rate_hz

    @property
    def served(self) -> float | None:
        """Requests the recording saw (estimated); None when ``covered`` is unknown."""
        return None if self.covered is None else self.requests * self.covered

    @property
    def main_us_per_request(self) -> float | None:
        """Main-thread CPU per request of the measurement (of every worker)."""
        return 1e6 * self.main_cpu_s / self.requests if self.requests else None

    @property
    def main_us_per_served(self) -> float | None:
        """Main-thread CPU per request the recording saw (estimated)."""
        served = self.served
        return 1e6 * self.main_cpu_s / served if served else None


def _ranked(
    counts: Counter[str], main: int, per_request: float | None, top: int
) -> list[FunctionTime]:
    """The ``top`` functions by samples; ``per_request``: µs of one sample per request."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [
        FunctionTime(
            name,
            n,
            n / main if main else 0.0,
            None if per_request is None else n * per_request,
        )
        for name, n in ordered
    ]


def summarise(
    stacks: Iterable[Stack],
    rate_hz: float,
    requests: int,
    covered: float | None = None,
    main_thread_cpu_s: float | None = None,
    top: int = TOP,
) -> ProfileSummary:
    """The main thread's share and CPU per request, its top functions by self time and
    the top functions of our code by inclusive time. Per-request figures divide by the
    requests the recording saw when ``covered`` is known, else by all of them."""
    total = main = 0
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack in stacks:
        total += stack.count
        if not is_main_thread(stack.thread):
            continue
        main += stack.count
        functions = [function_of(frame) for frame in stack.frames]
        if functions:
            self_counts[functions[-1]] += stack.count
        for name in set(functions):
            if is_ours(name):
                inclusive[name] += stack.count
    served = requests * covered if covered is not None else requests
    per_request = 1e6 / rate_hz / served if served > 0 else None
    return ProfileSummary(
        rate_hz,
        total,
        main,
        requests,
        covered,
        main_thread_cpu_s,
        _ranked(self_counts, main, per_request, top),
        _ranked(inclusive, main, per_request, top),
    )


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _function_table(title: str, rows: Sequence[FunctionTime]) -> list[str]:
    lines = [title, f"{'us/req':>10}  {'% main':>7}  function"]
    lines += [f"{_us(r.us_per_request):>10}  {100 * r.share:>6.1f}%  {r.function}" for r in rows]
    return lines if rows else [title, "  (no samples)"]


def render_summary(summary: ProfileSummary, heading: Sequence[str] = ()) -> str:
    share = summary.main_share
    lines = [*heading]
    lines.append(
        f"samples: {summary.samples:,} at {summary.rate_hz:g}/s, {summary.main_samples:,} on "
        f"the main thread ({'-' if share is None else f'{100 * share:.1f}%'})"
    )
    lines.append(
        f"main thread: {summary.main_cpu_s:.2f} s of CPU = "
        f"{_us(summary.main_us_per_request)} us per request of the measurement "
        f"({summary.requests:,} requests, every worker)"
    )
    if summary.served is not None and summary.covered is not None:
        lines.append(
            f"the recording saw {100 * summary.covered:.0f}% of the gateway's CPU during the "
            f"load: about {summary.served:,.0f} requests, "
            f"{_us(summary.main_us_per_served)} us per request it saw"
        )
        denominator = "per request the recording saw (estimated)"
        if summary.covered < LITTLE_SHARE:
            lines.append("(the recording saw little of the load: its figures are rough)")
    else:
        denominator = "per request of the measurement"
    if summary.main_thread_cpu_s is not None:
        lines.append(
            f"main thread's CPU time from /proc over the recording: "
            f"{summary.main_thread_cpu_s:.2f} s (py-spy's samples: {summary.main_cpu_s:.2f} s)"
        )
    lines += ["", f"us/req: main-thread CPU {denominator}; % main: of the main thread's samples"]
    lines += [
        "",
        *_function_table(f"top {TOP} functions by self time (main thread)", summary.by_self),
    ]
    lines += [
        "",
        *_function_table(
            f"top {TOP} aigateway functions by inclusive time (main thread)",
            summary.ours_inclusive,
        ),
    ]
    return "\n".join(lines) + "\n"


def file_stem(key: str) -> str:
    """A file name for a measurement key: ``/`` and anything unusual become ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", key).strip("._") or "profile"

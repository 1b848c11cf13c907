"""The progress display of a run, on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One line per step on stderr; redrawn in place with the elapsed time on a terminal."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.total = total
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self._line = ""
        self._last_draw = 0.0

    def say(self, text: str) -> None:
        self._clear()
        self.out.write(f"bench: {text}\n")
        self.out.flush()

    def step(self, index: int, text: str) -> None:
        self._line = f"[{index:>{len(str(self.total))}}/{self.total}] {text}"
        if self.tty:
            self._draw(self._line)
        else:
            self.out.write(self._line + "\n")
            self.out.flush()

    def tick(self, phase: str, elapsed: float, planned: float) -> None:
        now = time.monotonic()
        if self.tty and now - self._last_draw >= 0.2:
            self._last_draw = now
            self._draw(f"{self._line}  {phase} {elapsed:4.1f}/{planned:g} s")

    def finish(self, summary: str) -> None:
        if self.tty:
            self._draw(f"{self._line}  {summary}")
            self.out.write("\n")
        else:
            self.out.write(f"    {summary}\n")
        self.out.flush()

    def _draw(self, text: str) -> None:
        self.out.write("\r\x1b[2K" + text)
        self.out.flush()

    def _clear(self) -> None:
        if self.tty and self._line:
            self.out.write("\r\x1b[2K")

"""A dependency-free progress bar for commands that work through a known number of items.

On a terminal it redraws one line in place, at most ``refresh_s`` apart; when the stream is
not a terminal (a log file, a CI job) it prints a plain line every ``line_every_s`` instead,
so logs get a heartbeat rather than thousands of carriage returns. The last update (done ==
total) is always shown.

>>> import io
>>> out = io.StringIO()
>>> with ProgressBar("publishing", out, is_tty=False) as bar:
...     bar(250, 1000)
...     bar(1000, 1000)
>>> print(out.getvalue().splitlines()[-1])  # doctest: +ELLIPSIS
publishing: 1,000/1,000 (100%)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["ProgressBar"]

_STEADY_AFTER_S = 0.5  # rates and ETAs are shown once this much time has passed
_BAR_WIDTH = 30
_FIGURES_ROOM = 50  # columns kept for "[...] 1,234,567/1,234,567 (100%) 123,456/s ETA 1m05s"


class ProgressBar:
    """Call it with ``(done, total)``; use it as a context manager to end the line cleanly.

    Parameters
    ----------
    label : str
        What is in progress, shown first.
    stream : text stream
        Where to draw (``sys.stderr`` for commands whose results go to stdout).
    is_tty : bool, optional
        Whether to redraw in place; by default, whether ``stream`` is a terminal.
    refresh_s : float, default 0.1
        Least time between two redraws on a terminal (at most ten a second).
    line_every_s : float, default 5.0
        Least time between two printed lines when not on a terminal.
    clock : callable, default time.monotonic
        Seconds; tests pass a fake.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        is_tty: bool | None = None,
        refresh_s: float = 0.1,
        line_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.is_tty = stream.isatty() if is_tty is None else is_tty
        self.interval_s = refresh_s if self.is_tty else line_every_s
        self.clock = clock
        self.started = clock()
        self._last_shown: float | None = None
        self._drawn_width = 0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        finished = done >= total
        if (
            not finished
            and self._last_shown is not None
            and now - self._last_shown < self.interval_s
        ):
            return
        if not finished and self._last_shown is None and now - self.started < self.interval_s:
            return  # nothing to show for work that finishes in a blink
        self._last_shown = now
        if self.is_tty:
            line = self._bar_line(done, total, now)
            padding = " " * max(self._drawn_width - len(line), 0)
            self.stream.write(f"\r{line}{padding}")
            self._drawn_width = len(line)
        else:
            self.stream.write(self._text_line(done, total, now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line, if one was drawn."""
        if self.is_tty and self._drawn_width:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn_width = 0

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _figures(self, done: int, total: int, now: float) -> tuple[float, str]:
        """The fraction done, and ``done/total (pct) rate/s ETA``."""
        fraction = min(done / total, 1.0) if total > 0 else 1.0
        elapsed = now - self.started
        figures = f"{done:,}/{total:,} ({fraction:.0%})"
        if elapsed < _STEADY_AFTER_S:
            return fraction, figures  # a rate measured over a blink means nothing
        rate = done / elapsed
        figures += f" {rate:,.0f}/s"
        if done < total and rate > 0:
            figures += f" ETA {_duration((total - done) / rate)}"
        elif done >= total:
            figures += f" in {_duration(elapsed)}"
        return fraction, figures

    def _text_line(self, done: int, total: int, now: float) -> str:
        return f"{self.label}: {self._figures(done, total, now)[1]}"

    def _bar_line(self, done: int, total: int, now: float) -> str:
        fraction, figures = self._figures(done, total, now)
        columns = shutil.get_terminal_size(fallback=(80, 24)).columns
        # The bar keeps one width while the figures after it grow (rate, ETA appear).
        width = min(columns - len(self.label) - _FIGURES_ROOM, _BAR_WIDTH)
        if width < 10:
            return f"{self.label} {figures}"[: max(columns - 1, 1)]
        filled = round(width * fraction)
        return f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {figures}"


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h01m``.

    >>> _duration(4.4), _duration(185), _duration(7260)
    ('4s', '3m05s', '2h01m')
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"

"""Progress for long work: a tqdm bar on a terminal, a plain line every few seconds on a pipe or log.

Library functions take ``progress=False`` by default (like scikit-learn's
``verbose=0``); the command lines turn it on unless ``-q/--quiet``.

Example:
    >>> with Progress(total=3, desc="demo", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> bar.n
    3
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress", "LOG_EVERY"]

#: seconds between two progress lines when stderr is not a terminal
LOG_EVERY = 5.0


class Progress:
    """A progress counter that draws a tqdm bar on a terminal and logs lines elsewhere.

    Args:
        total: the count at completion, or None if unknown.
        desc: what is being counted, shown first on every line.
        unit: the unit's name ("img", "step", ...).
        enabled: False draws nothing at all.
        stream: where to write (stderr by default).
        every: seconds between log lines when ``stream`` is not a terminal.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
        stream: IO[str] | None = None,
        every: float = LOG_EVERY,
    ):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.n = 0
        self._logged = -1  # the count of the last logged line
        self._bar: Any = None
        self._start = self._last = time.monotonic()
        if enabled and _isatty(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self._logged = self.n
                self.write(self._line(now))

    def set_postfix(self, text: str) -> None:
        """Extra text on the bar (terminal only; log lines carry only the count and rate)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def write(self, text: str) -> None:
        """Print a line without breaking the bar (nothing when disabled)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish: close the bar, or log the final count if anything was logged or it took long."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._logged != self.n and time.monotonic() - self._start >= self.every:
            self.write(self._line(time.monotonic()))

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {count} {self.unit}{pct}, {self.n / elapsed:.1f} {self.unit}/s, {elapsed:.0f} s"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False

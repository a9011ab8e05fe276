"""Console output of the demo: the live (or periodic) status line."""

from __future__ import annotations

import time
from typing import Any

STATUS_PERIOD_S = 2.0


class Display:
    """Status line: rich Live on a terminal, a printed line every STATUS_PERIOD_S otherwise."""

    def __init__(self) -> None:
        from rich.console import Console
        self.console = Console(highlight=False)
        self.tty = self.console.is_terminal
        if not self.tty:
            self.console = Console(highlight=False, width=120)
        self._live = None
        self._last = 0.0

    def __enter__(self) -> 'Display':
        if self.tty:
            from rich.live import Live
            self._live = Live('', console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def status(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if self._live is not None:
            if force or now - self._last >= 0.25:
                self._last = now
                self._live.update(line, refresh=True)
        elif force or now - self._last >= STATUS_PERIOD_S:
            self._last = now
            self.console.print(line, soft_wrap=True)

    def print(self, *objects: Any) -> None:
        self.console.print(*objects, soft_wrap=not self.tty)


def status_line(mon: Any, elapsed: float, recorder: Any) -> str:
    d = mon.diag
    if mon.first_output is None:
        return (f'[{elapsed:5.1f} s] waiting for fourd_node output... '
                f"({d.get('_message', 'node not seen yet')})")
    return (f'[{elapsed:5.1f} s] frames {mon.frames:4d} | {mon.output_fps():4.1f} fps '
            f"(engine {d.get('fps', '?')}) | latency p50 {d.get('latency_ms_p50', '?')} ms | "
            f"tracks {mon.live_tracks:3d} | cache {d.get('cache_mb', '?')} MB | "
            f"dropped {d.get('dropped_frames', '?')} | bag {sum(recorder.counts.values())} msgs")

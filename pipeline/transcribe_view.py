"""What ``pipeline transcribe`` shows: a progress bar while it runs, a table at the end.

The bar counts audio seconds (files are weighed by their length, read from container
metadata before decoding), and shows files done, audio hours, the real-time factor so
far and the ETA. Without a terminal it prints one line per finished file instead.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .transcribe import Outcome


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


class View:
    """Progress for one run. Call :meth:`update` from the transcriber's progress hook."""

    def __init__(self, console: Console, files: int, total_audio_s: float) -> None:
        self.console = console
        self.files = files
        self.finished = 0
        self.audio_done_s = 0.0
        self.total_s = max(total_audio_s, 1.0)
        self.t0 = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]transcribing"), BarColumn(), TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[audio]}"), TextColumn("{task.fields[speed]}"),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("", total=self.total_s, files="", audio="", speed="")
        self._refresh()

    def __enter__(self) -> View:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, outcome: Outcome | None, seconds: float) -> None:
        self.audio_done_s += seconds
        if self.audio_done_s > self.total_s:  # metadata under-reported a length
            self.total_s = self.audio_done_s
            self.progress.update(self.task, total=self.total_s)
        if outcome is not None:
            self.finished += 1
            if not self.console.is_terminal:
                what = outcome.reason if outcome.status == "failed" else f"{outcome.duration_s:.1f} s of audio"
                self.console.print(f"[{self.finished}/{self.files}] {outcome.status}: {outcome.input.path} ({what})",
                                   highlight=False, soft_wrap=True)
        self._refresh()

    def _refresh(self) -> None:
        wall = time.monotonic() - self.t0
        speed = f"{self.audio_done_s / wall:.1f}× real time" if wall > 0 and self.audio_done_s else ""
        self.progress.update(self.task, completed=self.audio_done_s, files=f"{self.finished}/{self.files} files",
                             audio=f"{_hours(self.audio_done_s)} / {_hours(self.total_s)}", speed=speed)


def summary(console: Console, outcomes: list[Outcome], wall_s: float) -> None:
    """The table at the end, then every failure with its reason."""
    by = {status: [o for o in outcomes if o.status == status] for status in ("done", "skipped", "failed", "interrupted")}
    audio = sum(o.duration_s for o in by["done"])
    table = Table(title="Transcription")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("files transcribed / skipped / failed", f"{len(by['done'])} / {len(by['skipped'])} / {len(by['failed'])}")
    if by["interrupted"]:
        table.add_row("files not finished (interrupted)", str(len(by["interrupted"])))
    table.add_row("audio transcribed", _hours(audio))
    table.add_row("wall time", f"{wall_s:.1f} s")
    table.add_row("speed", f"{audio / wall_s:.1f}× real time" if wall_s > 0 else "-")
    table.add_row("chunks decoded", str(sum(o.chunks for o in by["done"])))
    table.add_row("words", str(sum(o.words for o in by["done"])))
    console.print(table)
    for o in by["failed"]:
        console.print(f"[red]failed[/red]: {o.input.path}: {o.reason}", highlight=False, soft_wrap=True)

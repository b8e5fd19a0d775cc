"""Load-test corpora in the shared corpus's formats.

* ``streams.jsonl``: one JSON object a line,
  ``{"file", "duration_s", "text", "utterances": [{"start_s", "end_s", "text"}]}``;
* ``clips.tsv``: ``id<TAB>file<TAB>duration_s<TAB>text`` (one utterance per clip);
* otherwise every audio file under the folder, with no reference (no WER, no latency
  per utterance: only errors, disconnects and resources).

A folder with both files gives both; paths are relative to the folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PipelineError

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac"}


@dataclass(frozen=True)
class Utterance:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Item:
    """One file to stream, with its reference when the corpus has one."""

    path: Path
    text: str | None = None
    utterances: tuple[Utterance, ...] = field(default_factory=tuple)


def load(root: str | Path) -> list[Item]:
    """Read a corpus folder (or a single streams.jsonl / clips.tsv file).

    Raises:
        PipelineError: nothing usable is there, or an index line is malformed.
    """
    root = Path(root)
    if root.is_file():
        index, root = root, root.parent
        items = _streams(index, root) if index.suffix == ".jsonl" else _clips(index, root)
    else:
        items = []
        if (root / "streams.jsonl").is_file():
            items += _streams(root / "streams.jsonl", root)
        if (root / "clips.tsv").is_file():
            items += _clips(root / "clips.tsv", root)
        if not items:
            items = [Item(p) for p in sorted(root.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES]
    if not items:
        raise PipelineError(f"{root}: no streams.jsonl, clips.tsv or audio files found")
    missing = [str(i.path) for i in items if not i.path.is_file()]
    if missing:
        raise PipelineError(f"corpus files missing: {', '.join(missing[:5])}")
    return items


def _streams(index: Path, root: Path) -> list[Item]:
    items = []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            utts = tuple(Utterance(float(u["start_s"]), float(u["end_s"]), str(u["text"])) for u in d["utterances"])
            items.append(Item(root / d["file"], str(d["text"]), utts))
        except (ValueError, KeyError, TypeError) as exc:
            raise PipelineError(f"{index}:{n}: bad line ({exc})") from None
    return items


def _clips(index: Path, root: Path) -> list[Item]:
    items = []
    with index.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row:
                continue
            try:
                _, file, duration, text = row[:4]
                items.append(Item(root / file, text, (Utterance(0.0, float(duration), text),)))
            except ValueError as exc:
                raise PipelineError(f"{index}:{n}: bad row ({exc})") from None
    return items

"""Transcript file formats: txt, srt, vtt and json, built from segments.

A segment is ``{"start": s, "end": s, "text": str, "words": [...]}`` in file time, as
:func:`pipeline.core.batch.segments_from_words` makes them. These are pure functions:
writing the files (atomically) is the caller's job.
"""

from __future__ import annotations

import json
from typing import Any

FORMATS = ("txt", "srt", "vtt", "json")


def timestamp(seconds: float, decimal: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with ``decimal="."``, ``HH:MM:SS.mmm`` (WebVTT)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_txt(segments: list[dict[str, Any]]) -> str:
    """The text, one segment a line."""
    return "".join(f"{s['text']}\n" for s in segments if s["text"])


def to_srt(segments: list[dict[str, Any]]) -> str:
    cues = [s for s in segments if s["text"]]
    return "\n".join(
        f"{i}\n{timestamp(s['start'])} --> {timestamp(max(s['end'], s['start'] + 0.001))}\n{_cue(s['text'])}\n"
        for i, s in enumerate(cues, 1)
    )


def to_vtt(segments: list[dict[str, Any]]) -> str:
    body = "\n".join(
        f"{timestamp(s['start'], '.')} --> {timestamp(max(s['end'], s['start'] + 0.001), '.')}\n{_cue(s['text'])}\n"
        for s in segments if s["text"]
    )
    return "WEBVTT\n\n" + body


def to_json(source: str, duration_s: float, segments: list[dict[str, Any]], words: bool, model: str = "") -> str:
    """The transcript with its segments; each segment's words only when asked for."""
    doc = {
        "file": source,
        "duration_s": round(duration_s, 3),
        "model": model,
        "text": " ".join(s["text"] for s in segments if s["text"]),
        "segments": [
            {"start": s["start"], "end": s["end"], "text": s["text"],
             **({"words": s.get("words", [])} if words else {})}
            for s in segments
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def render(fmt: str, source: str, duration_s: float, segments: list[dict[str, Any]], words: bool,
           model: str = "") -> str:
    """One format's text. Raises ``ValueError`` on an unknown format."""
    if fmt == "txt":
        return to_txt(segments)
    if fmt == "srt":
        return to_srt(segments)
    if fmt == "vtt":
        return to_vtt(segments)
    if fmt == "json":
        return to_json(source, duration_s, segments, words, model)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def _cue(text: str) -> str:
    # "-->" would end a cue's timing line early in some players; a blank line ends the cue.
    return " ".join(text.replace("-->", "->").split())

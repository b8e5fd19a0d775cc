"""Test audio, copied small from the shared corpus (see README.md here)."""

from pathlib import Path

DATA = Path(__file__).resolve().parent
JFK = DATA / "jfk.flac"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
STREAMS = DATA / "streams.jsonl"
STREAM_HEAD = DATA / "streams" / "s00_head.flac"

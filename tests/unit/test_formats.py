"""Transcript formats and the file handling of ``pipeline transcribe``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline import formats
from pipeline.transcribe import Input, Options, find_inputs, output_paths, write_atomically

SEGMENTS = [
    {"start": 0.5, "end": 2.25, "text": "Hello there.",
     "words": [{"word": "Hello", "start": 0.5, "end": 1.0, "probability": 0.9},
               {"word": "there.", "start": 1.0, "end": 2.25, "probability": 0.8}]},
    {"start": 3661.0, "end": 3662.5, "text": "An hour --> later.", "words": []},
]


def test_timestamps_in_both_styles():
    assert formats.timestamp(3661.0421) == "01:01:01,042"
    assert formats.timestamp(0.0014, ".") == "00:00:00.001"
    assert formats.timestamp(-1) == "00:00:00,000"


def test_srt_numbers_cues_and_keeps_arrows_out_of_the_text():
    srt = formats.to_srt(SEGMENTS)
    assert srt.split("\n")[:4] == ["1", "00:00:00,500 --> 00:00:02,250", "Hello there.", ""]
    assert "2\n01:01:01,000 --> 01:01:02,500\nAn hour -> later.\n" in srt


def test_vtt_has_its_header_and_dot_decimals():
    vtt = formats.to_vtt(SEGMENTS)
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello there.\n")


def test_json_has_words_only_when_asked():
    with_words = json.loads(formats.to_json("a.wav", 3700.0, SEGMENTS, words=True))
    without = json.loads(formats.to_json("a.wav", 3700.0, SEGMENTS, words=False))
    assert with_words["segments"][0]["words"][1] == {"word": "there.", "start": 1.0, "end": 2.25, "probability": 0.8}
    assert "words" not in without["segments"][0]
    assert without["text"] == "Hello there. An hour --> later."


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        formats.render("docx", "a", 1.0, SEGMENTS, False)


def test_folders_are_walked_for_media_and_keep_their_layout(tmp_path: Path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/a.wav", "in/sub/b.MP3", "in/notes.txt", "c.flac"):
        (tmp_path / name).write_bytes(b"x")
    inputs, problems = find_inputs([str(tmp_path / "in"), str(tmp_path / "c.flac"), str(tmp_path / "missing.wav")])
    assert [(i.path.relative_to(tmp_path).as_posix(), i.name.as_posix()) for i in inputs] == [
        ("in/a.wav", "a"), ("in/sub/b.MP3", "sub/b"), ("c.flac", "c")]
    assert [(p.input.path.name, p.reason) for p in problems] == [("missing.wav", "no such file or folder")]


def test_two_inputs_with_one_output_name_are_refused_not_overwritten(tmp_path: Path):
    for name in ("x/talk.wav", "y/talk.flac"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    inputs, problems = find_inputs([str(tmp_path / "x" / "talk.wav"), str(tmp_path / "y" / "talk.flac")])
    assert len(inputs) == 1 and len(problems) == 1 and "overwrite" in problems[0].reason


def test_outputs_go_to_the_out_folder_or_next_to_the_input(tmp_path: Path):
    item = Input(tmp_path / "rec" / "talk.en.wav", Path("sub/talk.en"))
    out = output_paths(item, Options(out_dir=tmp_path / "out", formats=("txt", "srt")))
    assert out == [tmp_path / "out" / "sub" / "talk.en.txt", tmp_path / "out" / "sub" / "talk.en.srt"]
    assert output_paths(item, Options(formats=("json",))) == [tmp_path / "rec" / "talk.en.json"]


def test_atomic_write_leaves_no_partial_file_when_writing_fails(tmp_path: Path):
    target = tmp_path / "deep" / "t.txt"
    old_umask = os.umask(0o022)
    try:
        write_atomically(target, "first\n")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "first\n"
    assert os.stat(target).st_mode & 0o777 == 0o644  # an ordinary file, not mkstemp's private one
    with pytest.raises(TypeError):
        write_atomically(target, b"not text")  # type: ignore[arg-type]
    assert target.read_text() == "first\n"
    assert [p.name for p in target.parent.iterdir()] == ["t.txt"]

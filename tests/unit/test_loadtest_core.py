"""Corpus loading and the report's arithmetic, on hand-made inputs."""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.loadtest import corpus
from pipeline.loadtest.metrics import Pass, judge, percentiles
from tests.data import DATA


def test_loads_streams_jsonl():
    (item,) = corpus.load(DATA)
    assert item.path.name == "s00_head.flac" and len(item.utterances) == 7 and item.text


def test_loads_clips_tsv_and_plain_folders(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.flac").write_bytes(b"x")
    assert [i.path.name for i in corpus.load(tmp_path)] == ["a.wav", "b.flac"]
    (tmp_path / "clips.tsv").write_text("c1\ta.wav\t2.5\tHello there.\n")
    (item,) = corpus.load(tmp_path)
    assert item.text == "Hello there." and item.utterances[0].end_s == 2.5


def test_bad_corpus(tmp_path):
    with pytest.raises(PipelineError, match="no streams.jsonl"):
        corpus.load(tmp_path)
    (tmp_path / "streams.jsonl").write_text('{"file": "x.wav"}\n')
    with pytest.raises(PipelineError, match="bad line"):
        corpus.load(tmp_path)


def test_percentiles():
    p = percentiles([0.1, 0.2, 0.3, 0.4])
    assert p["p50"] == 250.0 and p["max"] == 400.0 and p["count"] == 4
    assert percentiles([])["p50"] is None


def test_judge_matches_by_overlap_and_measures_from_last_sample():
    item = corpus.Item(DATA / "x.wav", "a b", (corpus.Utterance(1.0, 2.0, "a"), corpus.Utterance(3.0, 4.0, "b"),
                                               corpus.Utterance(5.0, 6.0, "c")))
    p = Pass(0, item)
    # frames of 0.5 s sent at t = 10 + k * 0.5 (real time)
    p.sent = [(10 + k * 0.5, (k + 1) * 8000) for k in range(14)]
    p.messages = [
        (11.2, {"type": "partial", "utterance_id": 0, "text": "", "start": 1.0, "end": 1.5}),
        (11.7, {"type": "partial", "utterance_id": 0, "text": "", "start": 1.0, "end": 2.0}),
        (12.0, {"type": "final", "utterance_id": 0, "text": "a", "start": 0.9, "end": 2.1}),
        (14.0, {"type": "final", "utterance_id": 1, "text": "b", "start": 2.9, "end": 3.5}),
        (14.1, {"type": "final", "utterance_id": 2, "text": "b", "start": 3.5, "end": 4.1}),
    ]
    outcomes, intervals = judge(p)
    a, b, c = outcomes
    # sample 2.0 s is in the frame sent at 10 + 3 * 0.5 = 11.5
    assert a.finals == 1 and a.final_latency_s == pytest.approx(0.5)
    assert a.first_partial_s == pytest.approx(11.2 - 10.5)  # 1.0 s is in the frame sent at 10.5
    assert b.finals == 2 and c.finals == 0
    assert intervals == [pytest.approx(0.5)]


def test_a_pass_cut_short_counts_only_what_was_sent():
    from pipeline.loadtest.metrics import transcripts

    item = corpus.Item(DATA / "x.wav", "a b c", (corpus.Utterance(1.0, 2.0, "a"), corpus.Utterance(3.0, 4.0, "b"),
                                                 corpus.Utterance(5.0, 6.0, "c")))
    p = Pass(0, item)
    p.sent = [(10 + k * 0.5, (k + 1) * 8000) for k in range(9)]  # 4.5 s: "c" never sent
    p.messages = [
        (12.0, {"type": "final", "utterance_id": 0, "text": "a", "start": 0.9, "end": 2.1}),
        (14.0, {"type": "final", "utterance_id": 1, "text": "b", "start": 2.9, "end": 4.1}),
        (14.5, {"type": "final", "utterance_id": 2, "text": "half", "start": 4.3, "end": 4.5}),  # flushed at stop
    ]
    outcomes, _ = judge(p)
    assert [o.reference.text for o in outcomes] == ["a", "b"] and all(o.finals == 1 for o in outcomes)
    assert transcripts(p) == ("a b", "a b")


def test_the_report_counts_finals_that_hold_no_word():
    from pipeline.loadtest.metrics import report

    item = corpus.Item(DATA / "x.wav", "a b c", (corpus.Utterance(1.0, 2.0, "a"), corpus.Utterance(3.0, 4.0, "b"),
                                                 corpus.Utterance(5.0, 6.0, "c")))
    p = Pass(0, item)
    p.sent = [(10 + k * 0.5, (k + 1) * 8000) for k in range(14)]
    p.messages = [
        (12.0, {"type": "final", "utterance_id": 0, "text": "A.", "start": 0.9, "end": 2.1}),
        (14.0, {"type": "final", "utterance_id": 1, "text": ".", "start": 2.9, "end": 4.1}),
        (16.0, {"type": "final", "utterance_id": 2, "text": "", "start": 4.9, "end": 6.1}),
    ]
    r = report([p], 1, 10.0, 10.0)
    assert r["utterances"]["empty"] == 2 and r["utterances"]["lost"] == 0

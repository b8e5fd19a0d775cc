"""The load test's report counts clients that admission control refused apart from failures."""

from pathlib import Path

from pipeline.loadtest.corpus import Item, Utterance
from pipeline.loadtest.metrics import Pass, report


def item() -> Item:
    return Item(Path("a.wav"), "one two", (Utterance(0.0, 1.0, "one two"),))


def test_a_refused_client_is_neither_a_failure_nor_a_lost_utterance():
    refused = Pass(1, item(), refused="client 1: 503 server at capacity")
    r = report([refused], clients=1, wall_s=10.0, t0=0.0)
    assert (r["refused"], r["errors"], r["disconnects"], r["utterances"]["expected"]) == (1, 0, 0, 0)
    assert r["refusals"] == ["client 1: 503 server at capacity"]


def test_the_last_quarter_of_the_run_is_reported_on_its_own():
    p = Pass(0, Item(Path("a.wav"), "a b", (Utterance(0.0, 1.0, "a"), Utterance(8.0, 9.0, "b"))))
    p.sent = [(1.0, 16000), (9.0, 16000 * 9)]
    p.messages = [(1.5, {"type": "final", "utterance_id": 0, "start": 0.0, "end": 1.0, "text": "a"}),
                  (11.0, {"type": "final", "utterance_id": 1, "start": 8.0, "end": 9.0, "text": "b"})]
    r = report([p], clients=1, wall_s=12.0, t0=0.0)
    assert r["latency_ms"]["final"]["count"] == 2
    assert r["latency_ms"]["final_last_quarter"]["count"] == 1
    assert r["latency_ms"]["final_last_quarter"]["p50"] == 2000.0

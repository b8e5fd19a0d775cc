"""The load-test tool's statistics against a scripted server whose answers are known.

The scripted server speaks the client protocol but has no VAD and no model: it answers each
reference utterance of the corpus with a final a fixed delay after receiving its last
sample, sends partials at fixed points of stream time, loses one utterance and duplicates
another. What the tool reports can then be checked against what was scripted.
"""

from __future__ import annotations

import asyncio
import json
import time

import jiwer
import pytest
from websockets.asyncio.server import serve
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.loadtest import corpus
from pipeline.loadtest.metrics import report
from pipeline.loadtest.runner import decode_corpus, run_clients
from tests.data import DATA

FINAL_DELAY_S = 0.25
PARTIAL_EVERY_S = 0.5  # of stream time
LOST, DUPLICATED = 2, 4  # indices of reference utterances
SPEED = 4.0


async def scripted_handler(ws, utterances):
    received = 0
    sent_finals: set[int] = set()
    partial_marks: dict[int, float] = {}
    pending: list[asyncio.Task] = []
    uid = 0

    async def final_later(i, u, ids):
        await asyncio.sleep(FINAL_DELAY_S)
        for k in ids:
            await ws.send(json.dumps({"type": "final", "utterance_id": k, "text": u.text, "start": u.start_s, "end": u.end_s}))

    async for frame in ws:
        if isinstance(frame, str):
            action = json.loads(frame)["action"]
            if action == "start":
                await ws.send(json.dumps({"type": "status", "message": "ready"}))
            elif action == "stop":
                await asyncio.gather(*pending)
                await ws.send(json.dumps({"type": "status", "message": "stopped"}))
            continue
        received += len(frame) // 2
        now_s = received / 16000
        for i, u in enumerate(utterances):
            mark = partial_marks.get(i, u.start_s + PARTIAL_EVERY_S)
            while mark < u.end_s and now_s >= mark:
                await ws.send(json.dumps({"type": "partial", "utterance_id": 100 + i, "text": "…", "start": u.start_s, "end": mark}))
                mark += PARTIAL_EVERY_S
            partial_marks[i] = mark
            if now_s >= u.end_s and i not in sent_finals:
                sent_finals.add(i)
                if i != LOST:
                    ids = [100 + i, 200 + i] if i == DUPLICATED else [100 + i]
                    pending.append(asyncio.create_task(final_later(i, u, ids)))
        uid += 1


def test_statistics_match_the_script():
    items = corpus.load(DATA)
    (item,) = items
    audio = decode_corpus(items)

    async def main():
        async with serve(lambda ws: scripted_handler(ws, item.utterances), "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            t0 = time.monotonic()
            passes = await run_clients(f"ws://127.0.0.1:{port}/v1/stream", items, audio, clients=2, speed=SPEED,
                                       stagger_s=0.2)
            return report(passes, 2, time.monotonic() - t0, t0)

    r = asyncio.run(main())
    n = len(item.utterances)
    assert r["clients"] == 2 and r["streams"] == 2
    assert r["utterances"] == {"expected": 2 * n, "finalized": 2 * (n - 1), "lost": 2, "duplicated": 2, "empty": 0}
    assert r["errors"] == 0 and r["disconnects"] == 0
    assert r["audio_s"] == pytest.approx(2 * item.utterances[-1].end_s + 2 * 0.8, abs=0.3)
    # Latencies: the script fixes them; the bounds allow one 100 ms frame of stream time
    # (25 ms at 4x) plus loopback and scheduling slack. They cannot come out lower.
    final = r["latency_ms"]["final"]
    assert FINAL_DELAY_S * 1000 <= final["p50"] <= FINAL_DELAY_S * 1000 + 150
    assert final["count"] == 2 * (n - 1)
    first = r["latency_ms"]["first_partial"]
    assert PARTIAL_EVERY_S / SPEED * 1000 - 30 <= first["p50"] <= PARTIAL_EVERY_S / SPEED * 1000 + 150
    interval = r["latency_ms"]["partial_interval"]
    assert interval["p50"] == pytest.approx(PARTIAL_EVERY_S / SPEED * 1000, abs=60)
    # WER: the finals say exactly the references, less one, plus one twice.
    normalize = EnglishTextNormalizer()
    texts = [u.text for u in item.utterances]
    hyp = [t for i, t in enumerate(texts) if i != LOST]
    hyp.insert(DUPLICATED, texts[DUPLICATED])
    expected = jiwer.wer([normalize(item.text)] * 2, [normalize(" ".join(hyp))] * 2)
    assert r["wer"] == pytest.approx(expected, abs=1e-3) and r["wer"] > 0
    # one latency series per client, for the plot
    assert set(r["final_latency_series"]) == {"0", "1"}


def test_refused_connection_is_an_error_not_a_crash():
    items = corpus.load(DATA)
    audio = decode_corpus(items)
    passes = asyncio.run(run_clients("ws://127.0.0.1:9/v1/stream", items, audio, clients=1, speed=10))
    r = report(passes, 1, 0.1, 0.0)
    assert r["errors"] == 1 and r["disconnects"] == 1 and r["utterances"]["expected"] == 0
    assert "client 0" in r["failures"][0]


def test_find_capacity_steps_up_and_writes_report_and_plot(fake_pipeline, tmp_path):
    from pipeline.loadtest import app

    report_path, plot_path = tmp_path / "cap.json", tmp_path / "cap.png"
    opts = app.Options(url=fake_pipeline.url, corpus=str(DATA), clients=1, step=1, max_clients=2, duration_s=8,
                       speed=4, stagger_s=0.1, find_capacity=True, p95_final_ms=5000,
                       report=str(report_path), plot=str(plot_path))
    result = app.run(opts)
    assert [s["clients"] for s in result["steps"]] == [1, 2]
    assert all(s["held"] for s in result["steps"]) and result["capacity"] == 2
    assert json.loads(report_path.read_text())["capacity"] == 2
    assert plot_path.stat().st_size > 10_000
    # an impossible target stops at the first step
    strict = app.run(app.Options(url=fake_pipeline.url, corpus=str(DATA), clients=1, step=1, max_clients=3,
                                 duration_s=4, speed=4, find_capacity=True, p95_final_ms=1))
    assert strict["capacity"] == 0 and len(strict["steps"]) == 1 and not strict["steps"][0]["held"]

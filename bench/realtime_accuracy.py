"""Benchmark: `/v1/realtime` deltas and transcripts, through the official `openai` client.

    python bench/realtime_accuracy.py [--corpus ../shared/corpus] [--config FILE]

Spawns `pipeline run`, streams every corpus stream at once at real-time pace (100 ms
appends, as a microphone would), and prints, over all items: the word error rate of the
`...completed` transcripts, of the same files through `/v1/stream` in the same run, how
many items got a delta during speech (before their final), and how many items' deltas
were not a prefix of their transcript (docs/protocol.md promises none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def realtime(base_url: str, path: Path) -> list[dict]:
    from openai import AsyncOpenAI

    from bench.realtime_latency import pcm24k, send_at_real_time

    pcm = pcm24k(str(path))
    client = AsyncOpenAI(base_url=base_url, api_key="unused")
    items: dict[str, dict] = {}
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()  # session.created

        sender = asyncio.create_task(send_at_real_time(conn, pcm))
        started = completed = 0
        while not (sender.done() and started and completed == started):
            try:
                event = await asyncio.wait_for(conn.recv(), 2.0)
            except asyncio.TimeoutError:
                continue
            item = items.setdefault(getattr(event, "item_id", "") or "", {"deltas": [], "transcript": None})
            started += event.type == "input_audio_buffer.speech_started"
            if event.type.endswith("transcription.delta"):
                item["deltas"].append(event.delta)
            elif event.type.endswith("transcription.completed"):
                item["transcript"] = event.transcript
                completed += 1
        await sender
    return [i for i in items.values() if i["transcript"] is not None]


async def stream(url: str, path: Path) -> str:
    import subprocess

    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "pipeline", "stream", str(path), "--url", url,
                                                   "--json"], capture_output=True, text=True)
    return " ".join(m["text"] for m in map(json.loads, out.stdout.splitlines()) if m["type"] == "final")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--config", help="pipeline config file")
    args = ap.parse_args()

    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    from pipeline.loadtest.runner import SpawnedPipeline

    normalize = EnglishTextNormalizer()
    streams = [json.loads(line) for line in (Path(args.corpus) / "streams.jsonl").read_text().splitlines() if line]
    paths = [Path(args.corpus) / s["file"] for s in streams]
    with tempfile.TemporaryDirectory() as tmp:
        p = SpawnedPipeline(args.config, Path(tmp) / "pipeline.log", ready_timeout_s=120)
        try:
            base = p.url.replace("ws://", "http://").rsplit("/v1/", 1)[0] + "/v1"

            async def both() -> tuple[list, list]:
                rt = await asyncio.gather(*(realtime(base, path) for path in paths))
                st = await asyncio.gather(*(stream(p.url, path) for path in paths))
                return rt, st

            rt, st = asyncio.run(both())
        finally:
            p.stop(30)
    refs = [normalize(s["text"]) for s in streams]
    items = [i for file_items in rt for i in file_items]
    early = sum(1 for i in items if len(i["deltas"]) > 1 or (i["deltas"] and i["deltas"][0] != i["transcript"]))
    broken = sum(1 for i in items if not i["transcript"].startswith("".join(i["deltas"])))
    rt_wer = jiwer.wer(refs, [normalize(" ".join(i["transcript"] for i in f)) for f in rt])
    st_wer = jiwer.wer(refs, [normalize(t) for t in st])
    print(f"items {len(items)}: a delta during speech {early} ({100 * early / max(1, len(items)):.0f} %), "
          f"deltas not a prefix of the transcript {broken}")
    print(f"WER /v1/realtime {100 * rt_wer:.2f} %   /v1/stream (same run, same files) {100 * st_wer:.2f} %")


if __name__ == "__main__":
    main()

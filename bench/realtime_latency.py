"""Benchmark: `/v1/realtime` with the official `openai` client, at real-time pace.

    python bench/realtime_latency.py [--file tests/data/jfk.flac] [--config FILE]

Spawns `pipeline run`, streams the file through `client.realtime.connect()` in 100 ms
appends at real time (with 1 s of silence after it), and prints, for each item, its
transcript, how long after `input_audio_buffer.speech_stopped` its `...completed` event
came, and the deltas as they were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pcm24k(path: str) -> bytes:
    """The file as 24 kHz PCM16 (the Realtime API's rate), with 1 s of silence after it."""
    import numpy as np
    from faster_whisper.audio import decode_audio

    audio = np.concatenate([decode_audio(path, sampling_rate=24000), np.zeros(24000, np.float32)])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def send_at_real_time(conn: object, pcm: bytes) -> None:
    """Append ``pcm`` in 100 ms pieces, each when a live microphone would have it."""
    t0, step = time.monotonic(), 4800  # 100 ms of 24 kHz PCM16
    for k, i in enumerate(range(0, len(pcm), step)):
        await asyncio.sleep(max(0.0, t0 + k * 0.1 - time.monotonic()))
        await conn.send({"type": "input_audio_buffer.append",  # type: ignore[attr-defined]
                         "audio": base64.b64encode(pcm[i : i + step]).decode()})


async def run(base_url: str, path: str) -> None:
    from openai import AsyncOpenAI

    pcm = pcm24k(path)
    client = AsyncOpenAI(base_url=base_url, api_key="unused")
    events: list[tuple[float, object]] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()  # session.created

        sender = asyncio.create_task(send_at_real_time(conn, pcm))
        started = stopped = completed = 0
        while not (sender.done() and started and completed == started):
            try:
                event = await asyncio.wait_for(conn.recv(), 2.0)
            except asyncio.TimeoutError:
                continue
            events.append((time.monotonic(), event))
            started += event.type == "input_audio_buffer.speech_started"
            stopped += event.type == "input_audio_buffer.speech_stopped"
            completed += event.type.endswith("transcription.completed")
        await sender
    stop_at = {e.item_id: t for t, e in events if e.type == "input_audio_buffer.speech_stopped"}
    waits = []
    for t, e in events:
        if e.type.endswith("transcription.completed"):
            waits.append(1000 * (t - stop_at[e.item_id]))
            print(f"{waits[-1]:6.0f} ms after speech_stopped: {e.transcript}")
    print("deltas:", [e.delta for _, e in events if e.type.endswith("transcription.delta")])
    if waits:
        print(f"completed after speech_stopped: min {min(waits):.0f} ms, max {max(waits):.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(ROOT / "tests" / "data" / "jfk.flac"))
    ap.add_argument("--config", help="config file for the spawned pipeline")
    args = ap.parse_args()
    from pipeline.loadtest.runner import SpawnedPipeline

    log = Path(tempfile.mkstemp(prefix="bench-realtime-", suffix=".log")[1])
    spawned = SpawnedPipeline(args.config, log)
    try:
        asyncio.run(run(spawned.url.replace("ws://", "http://").rsplit("/v1/", 1)[0] + "/v1", args.file))
    finally:
        spawned.stop()


if __name__ == "__main__":
    main()

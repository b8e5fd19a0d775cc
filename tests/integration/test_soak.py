"""Soak: many short sessions against one `pipeline run` process; its memory stays flat."""

from __future__ import annotations

import json
import socket

import psutil
from websockets.sync.client import connect

from pipeline.client import load_audio
from pipeline.loadtest.runner import SpawnedPipeline
from tests.data import JFK
from tests.helpers import pcm16, timeout

CYCLES = 1000
WARMUP = 150


def cycle(url: str, audio: bytes, n: int) -> None:
    """One client: start, a little speech, then a clean stop, a close mid-stream, or a vanishing."""
    with connect(url, open_timeout=timeout(10)) as ws:
        ws.send('{"action":"start"}')
        ws.send(audio)
        if n % 3 == 0:
            ws.send('{"action":"stop"}')
            while json.loads(ws.recv(timeout=timeout(10))) != {"type": "status", "message": "stopped"}:
                pass
        elif n % 3 == 1:
            ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close frame, mid-utterance
        # else: a normal close mid-utterance, on leaving the block


def test_a_thousand_sessions_leave_the_server_memory_flat(tmp_path):
    config = tmp_path / "fake.toml"
    config.write_text('[workers]\nmodel = "fake"\nfake_delay_ms = 5\ncount = 1\n[server]\nmax_audio_rate = 0.0\n')
    server = SpawnedPipeline(str(config), tmp_path / "pipeline.log", ready_timeout_s=timeout(60))
    try:
        proc = psutil.Process(server.pid)
        audio = pcm16(load_audio(str(JFK))[16000 : 16000 + 8000])  # half a second of speech
        for n in range(WARMUP):
            cycle(server.url, audio, n)
        before = proc.memory_info().rss
        for n in range(CYCLES):
            cycle(server.url, audio, n)
        after = proc.memory_info().rss
        growth_mb = (after - before) / 2**20
        print(f"server RSS after {WARMUP} sessions {before / 2**20:.1f} MB, "
              f"after {CYCLES} more {after / 2**20:.1f} MB (+{growth_mb:.1f} MB)")
        # A leak of one session's state (VAD model state, buffers, a queue) would be tens of
        # KB each: 1000 of them are tens of MB.
        assert growth_mb < 8, f"server memory grew by {growth_mb:.1f} MB over {CYCLES} sessions"
    finally:
        code = server.stop()
    assert code == 0, server.logs()

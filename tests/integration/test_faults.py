"""Faults with real processes: a worker killed while it holds a final."""

from __future__ import annotations

import json
import os
import signal

from websockets.sync.client import connect

from pipeline.client import load_audio
from tests.conftest import fake_config, running
from tests.data import JFK
from tests.helpers import pcm16, timeout


def test_sigkill_of_every_worker_mid_utterance_still_gives_each_final_once(pipeline_factory):
    p = pipeline_factory(fake_config(fake_delay_ms=1500, count=2))
    audio = load_audio(str(JFK))
    with connect(p.url) as ws:
        ws.send('{"action":"start","partials":false}')
        for i in range(0, len(audio), 1600):
            ws.send(pcm16(audio[i : i + 1600]))
        ws.send('{"action":"stop"}')
        messages = []
        killed = []
        while (m := json.loads(ws.recv(timeout=timeout(60)))) != {"type": "status", "message": "stopped"}:
            messages.append(m)
            if m["type"] == "final" and not killed:
                # Finals of one stream are decoded in order, so the next one is now being
                # decoded: kill every worker while it holds that job.
                killed = [pid for pid in p.worker_pids if running(pid)]
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
    assert killed
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["utterance_id"] for f in finals] == list(range(len(finals))) and len(finals) >= 3
    assert not [m for m in messages if m["type"] == "error"]
    assert all(f["text"].startswith("speech of") for f in finals)
    assert p.stop() == 0
    (summary,) = [line for line in p.lines if "jobs done" in line]
    retried = int(summary.split("retried: ")[1].split(";")[0])
    assert retried >= 1, summary  # the killed worker's job was dispatched again

"""/metrics, /healthz, /readyz on the WebSocket port, and JSON logs."""

from __future__ import annotations

import json
import logging
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from pipeline.client import load_audio
from pipeline.logs import JsonFormatter
from tests.data import JFK
from tests.helpers import pcm16, timeout


def scrape(p) -> dict[str, float]:
    body = urllib.request.urlopen(p.http_base + "/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_metrics_follow_sessions_jobs_latency_and_errors(fake_pipeline):
    p = fake_pipeline
    before = scrape(p)
    assert before["stt_ready_workers"] == 2 and before["stt_sessions"] == 0
    audio = load_audio(str(JFK))
    with connect(p.url) as ws:
        ws.send('{"action":"start"}')
        ws.send("not json")
        for i in range(0, len(audio), 1600):
            ws.send(pcm16(audio[i : i + 1600]))
        during = scrape(p)
        ws.send('{"action":"stop"}')
        finals = 0
        while (m := json.loads(ws.recv(timeout=timeout(30)))) != {"type": "status", "message": "stopped"}:
            finals += m["type"] == "final"
    after = scrape(p)
    assert during["stt_sessions"] == 1
    assert after["stt_jobs_total{kind=final,outcome=done}"] == finals >= 3
    assert after["stt_jobs_total{kind=partial,outcome=done}"] >= 1
    assert after["stt_final_latency_seconds_count"] == finals
    assert after["stt_decode_seconds_count{kind=final}"] == finals
    assert after["stt_client_errors_total{code=bad_json}"] == 1
    assert after["stt_queue_depth{priority=final}"] == 0 and "stt_queue_depth{priority=batch}" in after
    assert after["stt_job_retries_total"] == 0


def test_health_endpoints(fake_pipeline):
    assert urllib.request.urlopen(fake_pipeline.http_base + "/healthz", timeout=5).read() == b"ok\n"
    assert b"2 worker" in urllib.request.urlopen(fake_pipeline.http_base + "/readyz", timeout=5).read()


def test_json_log_lines_parse_and_carry_tracebacks():
    formatter = JsonFormatter("worker-0")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("pipeline.worker").makeRecord(
            "pipeline.worker", logging.ERROR, __file__, 1, "job %s failed", ("x:1:f",), exc_info=__import__("sys").exc_info())
    doc = json.loads(formatter.format(record))
    assert doc["level"] == "error" and doc["logger"] == "pipeline.worker" and doc["process"] == "worker-0"
    assert doc["message"] == "job x:1:f failed" and "ValueError: boom" in doc["exc"]
    assert doc["ts"].endswith("+00:00")

"""A front end and a worker on "another host": a network namespace joined by a veth pair.

Where the test cannot make a namespace (not root, no `ip netns`), the worker runs on this
host over loopback TCP instead. Either way: CurveZMQ keys, `--workers 0`, `pipeline
worker --connect`, the real model, JSON logs and /metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import jiwer
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.keys import init_keys
from pipeline.loadtest.runner import SpawnedPipeline
from tests.data import JFK, JFK_TEXT
from tests.helpers import timeout

pytestmark = pytest.mark.system
normalize = EnglishTextNormalizer()
PIPELINE = [sys.executable, "-m", "pipeline"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def other_host() -> Iterator[tuple[list[str], str]]:
    """(command prefix to run there, the front end's address as seen from there)."""
    tag = f"{os.getpid() % 10000}"
    ns, host_if, ns_if = f"stt-w{tag}", f"sttv{tag}a", f"sttv{tag}b"
    net = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    try:
        if os.geteuid() != 0:
            raise PermissionError("not root")
        _ip("netns", "add", ns)
    except (PermissionError, FileNotFoundError, subprocess.CalledProcessError, OSError):
        yield [], "127.0.0.1"  # no namespaces here: loopback TCP
        return
    try:
        try:
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("addr", "add", f"{net}.1/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{net}.2/30", "dev", ns_if)
            _ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            place: tuple[list[str], str] = (["ip", "netns", "exec", ns], f"{net}.1")
        except subprocess.CalledProcessError:  # namespaces, but no veth here: loopback TCP
            place = ([], "127.0.0.1")
        yield place
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)  # takes the veth pair along
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)


def test_a_worker_on_another_host_joins_with_its_key_and_does_the_work(tmp_path):
    keys = tmp_path / "keys"
    init_keys(keys, ["host-a"])
    config = tmp_path / "front.toml"
    config.write_text(f'[security]\nkeys_dir = "{keys}"\nlog_format = "json"\n')
    with other_host() as (there, front_address):
        front = SpawnedPipeline(str(config), tmp_path / "front.log", ready_timeout_s=timeout(60), wait_ready=False,
                                args=["--workers", "0", "--worker-endpoint", f"tcp://{front_address}:*"])
        worker = None
        try:
            assert front.worker_endpoint.startswith(f"tcp://{front_address}:")
            health = front.url.replace("ws://", "http://").rsplit("/v1/", 1)[0]
            with pytest.raises(urllib.error.HTTPError) as info:  # front end only: not ready
                urllib.request.urlopen(health + "/readyz", timeout=5)
            assert info.value.code == 503
            worker = subprocess.Popen([*there, *PIPELINE, "worker", "--connect", front.worker_endpoint,
                                       "--processes", "1", "--keys", str(keys), "--key-name", "host-a"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + timeout(120)
            while True:
                with contextlib.suppress(urllib.error.HTTPError, urllib.error.URLError):
                    if urllib.request.urlopen(health + "/readyz", timeout=5).status == 200:
                        break
                assert time.monotonic() < deadline and worker.poll() is None, "the remote worker never joined"
                time.sleep(0.2)
            out = subprocess.run([*PIPELINE, "stream", str(JFK), "--url", front.url, "--speed", "4"],
                                 capture_output=True, text=True, timeout=timeout(120))
            assert out.returncode == 0, out.stderr
            text = " ".join(line.split("] ", 1)[1] for line in out.stdout.splitlines() if "] " in line)
            assert jiwer.wer(normalize(JFK_TEXT), normalize(text)) <= 0.10, text
            metrics = urllib.request.urlopen(health + "/metrics", timeout=5).read().decode()
            assert "stt_ready_workers 1.0" in metrics
            assert 'stt_jobs_total{kind="final",outcome="done"}' in metrics
        finally:
            if worker is not None:
                worker.terminate()
                try:
                    worker.communicate(timeout=timeout(20))
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.communicate()
            front.stop()
    # The worker was the remote one; the front end ran none of its own and logged JSON.
    log_lines = (tmp_path / "front.log").read_text().splitlines()
    records = [json.loads(line) for line in log_lines if line.startswith("{")]
    assert records and len(records) == len([line for line in log_lines if line.strip()])
    joined = [r for r in records if r["logger"] == "pipeline.dispatcher" and "is ready" in r["message"]]
    assert joined and "worker-0" in joined[0]["message"]
    assert not [r for r in records if r["logger"] == "pipeline.supervisor" and "started" in r["message"]]

"""Admission by measured load, on real sockets (issue 14): past what the workers can carry,
a new stream gets 503 with the reason at the handshake, and the admitted ones go on."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from pipeline.client import load_audio
from tests.conftest import fake_config
from tests.data import JFK
from tests.helpers import pcm16, timeout
from tests.integration.test_reliability import assert_one_final_each, until_stopped


def loaded(count: int = 1, **server) -> object:
    config = fake_config(count=count, fake_delay_ms=50)
    return replace(config, server=replace(config.server, max_sessions=16, **server))


def refused(url: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=timeout(10))
    assert info.value.response.status_code == 503
    return info.value


def test_a_stream_the_pool_cannot_carry_is_refused_and_the_admitted_ones_go_on(pipeline_factory):
    # One worker, and streams assumed to cost 0.3 of it: 0.75 of the worker holds two.
    p = pipeline_factory(loaded(max_final_load=0.75, stream_cost=0.3))
    audio = pcm16(load_audio(str(JFK)))
    with connect(p.url) as a, connect(p.url) as b:
        refusal = refused(p.url)
        assert b"at capacity" in refusal.response.body and b"1 worker(s)" in refusal.response.body
        assert refusal.response.headers["Retry-After"]
        for ws in (a, b):
            ws.send(json.dumps({"action": "start", "format": "pcm_s16le"}))
            for i in range(0, len(audio), 6400):
                ws.send(audio[i:i + 6400])
            ws.send(json.dumps({"action": "stop"}))
        for ws in (a, b):
            assert_one_final_each(until_stopped(ws), at_least=2)
    connect(p.url).close()  # the two left: there is room again


def test_admission_follows_the_measured_cost_not_a_session_count(pipeline_factory):
    # The prior says each stream costs a whole worker, so one more than zero is too many
    # with 0.75 of one worker; with two workers, one stream fits.
    one = pipeline_factory(loaded(count=1, max_final_load=0.75, stream_cost=1.0))
    assert b"at capacity" in refused(one.url).response.body
    two = pipeline_factory(loaded(count=2, max_final_load=0.75, stream_cost=1.0))
    with connect(two.url):
        assert b"2 worker(s)" in refused(two.url).response.body


def test_while_finals_are_late_new_streams_are_refused(pipeline_factory):
    # Every job's first attempt hangs 3 s: the first final is late, so the pool is behind.
    p = pipeline_factory(replace(loaded(max_final_load=0.75, late_final_s=0.5), workers=replace(
        loaded().workers, fake_stall_s=3.0)))
    audio = pcm16(load_audio(str(JFK)))
    with connect(p.url) as ws:
        ws.send(json.dumps({"action": "start", "format": "pcm_s16le"}))
        ws.send(audio[: 3 * 32000])
        ws.send(json.dumps({"action": "stop"}))
        time.sleep(1.5)
        assert b"overloaded" in refused(p.url).response.body
        until_stopped(ws, limit_s=30)
    connect(p.url).close()


def test_off_means_only_the_session_cap(pipeline_factory):
    p = pipeline_factory(loaded(max_final_load=0.0, stream_cost=5.0))
    with connect(p.url), connect(p.url), connect(p.url):
        pass


def test_the_load_test_counts_refused_clients_apart(pipeline_factory):
    import asyncio

    from pipeline.loadtest import corpus
    from pipeline.loadtest.metrics import report
    from pipeline.loadtest.runner import decode_corpus, run_clients
    from tests.data import DATA

    p = pipeline_factory(loaded(max_final_load=0.75, stream_cost=0.5))  # one worker holds one stream
    items = corpus.load(DATA)
    audio = decode_corpus(items)
    passes = asyncio.run(run_clients(p.url, items, audio, clients=2, speed=8, stagger_s=0.2))
    r = report(passes, 2, 10.0, 0.0)
    assert r["refused"] == 1 and "at capacity" in r["refusals"][0]
    assert r["errors"] == 0 and r["utterances"]["lost"] == 0 and r["utterances"]["finalized"] >= 1

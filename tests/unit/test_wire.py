"""The ZeroMQ schema: round trips, and malformed frames raise ProtocolError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import wire
from pipeline.errors import ProtocolError


def test_job_round_trip():
    audio = np.linspace(-1, 1, 1000, dtype=np.float32)
    job = wire.Job("s1:0:f", wire.Priority.FINAL, audio, {"beam_size": 5}, key="s1:0", attempt=2)
    frames = [bytes(f) for f in wire.encode_job(job)]
    command, header, payload = wire.decode(frames)
    assert command is wire.Command.JOB
    back = wire.decode_job(header, payload)
    assert back.job_id == job.job_id and back.priority == job.priority and back.key == "s1:0"
    assert back.options == {"beam_size": 5} and back.attempt == 2
    np.testing.assert_array_equal(back.audio, audio)


@pytest.mark.parametrize(
    "frames, code",
    [
        ([b"XXX1", b"\x02", b"{}"], "bad_protocol"),
        ([wire.PROTOCOL, b"\x99", b"{}"], "bad_command"),
        ([wire.PROTOCOL, b"\x02", b"{nope"], "bad_header"),
        ([wire.PROTOCOL, b"\x02", b"[]"], "bad_header"),
        ([wire.PROTOCOL], "bad_frames"),
    ],
)
def test_malformed(frames, code):
    with pytest.raises(ProtocolError) as info:
        wire.decode(frames)
    assert info.value.code == code


def test_job_needs_whole_float32_payload():
    with pytest.raises(ProtocolError):
        wire.decode_job({"job_id": "x"}, b"\x00\x00\x00")
    with pytest.raises(ProtocolError):
        wire.decode_job({"job_id": "x"}, None)
    with pytest.raises(ProtocolError):
        wire.decode_job({"priority": 0}, b"\x00" * 4)


@given(st.lists(st.binary(max_size=50), max_size=6))
def test_random_frames_never_raise_anything_else(frames):
    try:
        command, header, payload = wire.decode(frames)
        if command is wire.Command.JOB:
            wire.decode_job(header, payload)
    except ProtocolError:
        pass

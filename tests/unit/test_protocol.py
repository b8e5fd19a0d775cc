"""Client protocol parsing: every bad input becomes a ProtocolError with a code."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import protocol
from pipeline.errors import ProtocolError


def test_start_defaults():
    assert protocol.parse('{"action":"start"}') == protocol.Start()


def test_start_with_fields():
    msg = protocol.parse(json.dumps({"action": "start", "sample_rate": 44100, "format": "pcm_f32le",
                                     "language": "de", "words": True, "partials": False}))
    assert msg == protocol.Start(44100, "pcm_f32le", "de", True, False)


@pytest.mark.parametrize(
    "text, code",
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_json"),
        ('{"foo":1}', "bad_message"),
        ('{"action":"dance"}', "unknown_action"),
        ('{"action":"start","sample_rate":4000}', "unsupported_sample_rate"),
        ('{"action":"start","sample_rate":"16000"}', "unsupported_sample_rate"),
        ('{"action":"start","sample_rate":true}', "unsupported_sample_rate"),
        ('{"action":"start","format":"opus"}', "unsupported_format"),
        ('{"action":"start","language":"xx"}', "unsupported_language"),
        ('{"action":"start","words":"yes"}', "bad_message"),
        ('{"action":"start","colour":"red"}', "bad_message"),
    ],
)
def test_bad_messages_have_codes(text, code):
    with pytest.raises(ProtocolError) as info:
        protocol.parse(text)
    assert info.value.code == code
    assert info.value.message


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_protocol_error(text):
    try:
        protocol.parse(text)
    except ProtocolError:
        pass


@given(st.dictionaries(st.sampled_from(["action", "sample_rate", "format", "language", "words", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.floats())))
def test_any_object_parses_or_raises_protocol_error(obj):
    try:
        protocol.parse(json.dumps(obj))
    except ProtocolError:
        pass


def test_transcript_rounds_times():
    msg = protocol.transcript("final", 3, "hi", 1.23456, 2.0)
    assert msg == {"type": "final", "utterance_id": 3, "text": "hi", "start": 1.235, "end": 2.0}
    assert "words" not in msg

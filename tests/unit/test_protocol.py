"""Client protocol parsing: every bad input becomes a ProtocolError with a code."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import protocol
from pipeline.errors import ProtocolError
from tests.fuzz import dumps, shaped, values


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
        # Unhashable values, huge numbers and deep nesting (issue 13): codes, not TypeError.
        ('{"action":"start","format":[]}', "unsupported_format"),
        ('{"action":"start","format":{}}', "unsupported_format"),
        ('{"action":"start","language":[]}', "unsupported_language"),
        ('{"action":"start","language":{"en":1}}', "unsupported_language"),
        ('{"action":"start","sample_rate":[16000]}', "unsupported_sample_rate"),
        ('{"action":"start","sample_rate":1e999}', "unsupported_sample_rate"),
        ('{"action":"start","sample_rate":NaN}', "unsupported_sample_rate"),
        ('{"action":"start","sample_rate":' + "1" * 5000 + "}", "bad_json"),
        ('{"action":' + "9" * 5000 + "}", "bad_json"),
        ('{"action":{"start":1}}', "unknown_action"),
        ('{"action":["start"]}', "unknown_action"),
        ('{"action":"start","words":[]}', "bad_message"),
        ("[" * 100000 + "]" * 100000, "bad_json"),
        ('{"a":' * 100000 + "1" + "}" * 100000, "bad_json"),
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


START_FIELDS = {"action": None, "sample_rate": None, "format": None, "language": None, "words": None,
                "partials": None}


@settings(max_examples=300, deadline=None)
@given(st.one_of(values(), shaped(START_FIELDS)),
       st.sampled_from([None, "start", "stop", "ping"]))
def test_nested_and_huge_values_in_any_field_raise_only_protocol_error(obj, action):
    if isinstance(obj, dict) and action is not None:
        obj = {**obj, "action": action}
    try:
        protocol.parse(dumps(obj))
    except ProtocolError as exc:
        assert exc.code in {"bad_json", "bad_message", "unknown_action", "unsupported_format",
                            "unsupported_sample_rate", "unsupported_language"}
        assert len(exc.message) < 300  # a value is never echoed whole


def test_describe_never_echoes_a_container_or_a_long_value():
    assert protocol.describe([[1] * 1000]) == "a list" and protocol.describe({"a": 1}) == "an object"
    assert protocol.describe(10**100) == "a number of more than 40 digits"
    assert protocol.describe("x" * 1000) == repr("x" * 40) + "..."
    assert protocol.describe(float("nan")) == "NaN" and protocol.describe(None) == "null"


def test_transcript_rounds_times():
    msg = protocol.transcript("final", 3, "hi", 1.23456, 2.0)
    assert msg == {"type": "final", "utterance_id": 3, "text": "hi", "start": 1.235, "end": 2.0}
    assert "words" not in msg


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(shaped(START_FIELDS), values()), max_size=5))
def test_a_session_fed_nested_and_huge_values_answers_each_with_an_error_and_never_raises(objs):
    from pipeline.config import Config
    from pipeline.core.session import Session
    from tests.helpers import EnergyVad

    session = Session("s1", Config(), EnergyVad)
    for obj in objs:
        session.receive_text(dumps({**obj, "action": "start"} if isinstance(obj, dict) else obj))
    assert all(m["type"] in ("error", "status") for m in session.messages_to_send())

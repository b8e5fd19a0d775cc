"""Config loading: defaults, the shipped file, and errors that name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_toml_matches_dataclass_defaults():
    assert config.load(ROOT / "configs" / "default.toml") == config.Config()


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*'prot'"):
        config.load(p)


def test_unknown_section(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[serverr]\n")
    with pytest.raises(ConfigError, match=r"serverr"):
        config.load(p)


def test_wrong_type_and_bad_value(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[server]\nport = "80"\n')
    with pytest.raises(ConfigError, match="port"):
        config.load(p)
    p.write_text("[segmenter]\nvad_threshold = 1.5\n")
    with pytest.raises(ConfigError, match="vad_threshold"):
        config.load(p)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")
    p = tmp_path / "c.toml"
    p.write_text("[server\n")
    with pytest.raises(ConfigError, match="TOML"):
        config.load(p)


def test_int_accepted_for_float_and_override():
    c = config.from_dict({"segmenter": {"partial_interval_s": 1}})
    assert c.segmenter.partial_interval_s == 1.0
    c2 = config.override(c, "server", port=9000, host=None)
    assert c2.server.port == 9000 and c2.server.host == c.server.host
    with pytest.raises(ConfigError):
        config.override(c, "workers", cpu_threads=0)


def test_worker_count_auto_is_cores():
    assert config.WorkersConfig().resolved_count() >= 1
    assert config.WorkersConfig(count=3).resolved_count() == 3


def test_every_shipped_config_loads():
    for path in (ROOT / "configs").glob("*.toml"):
        config.load(path)
    assert config.load(ROOT / "configs" / "default.toml") == config.Config()


def test_the_burst_must_hold_the_largest_legal_message():
    """Issue 13, defect 5: 1 MiB of PCM16 is 32.8 s at 16 kHz and 65.5 s at 8 kHz; a 30 s burst
    refused one legal message on a fresh connection."""
    with pytest.raises(ConfigError, match=r"audio_burst_s \(30 s\).*max_message_bytes.*65\.5 s.*66"):
        config.from_dict({"server": {"audio_burst_s": 30.0}})
    config.from_dict({"server": {"audio_burst_s": 30.0, "max_message_bytes": 480000}})  # 30 s at 8 kHz
    config.from_dict({"server": {"audio_burst_s": 30.0, "max_audio_rate": 0.0}})  # no rate limit, no burst
    with pytest.raises(ConfigError, match="max_message_bytes"):
        config.from_dict({"server": {"max_message_bytes": 0}})

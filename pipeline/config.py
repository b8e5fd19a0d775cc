"""Configuration: frozen dataclasses loaded from TOML.

Every setting lives in ``configs/default.toml`` with its meaning. A user's file only needs
the keys it changes; an unknown section or key is an error that names the file and the key,
so that a typo never silently falls back to a default. CLI flags override the file through
:func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Sample rate of everything past the ingest: Silero VAD and Whisper both want 16 kHz.
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ServerConfig:
    """The WebSocket ingest and gateway."""

    host: str = "127.0.0.1"
    port: int = 8765
    max_sessions: int = 64
    max_sessions_per_address: int = 16
    max_message_bytes: int = 1 << 20
    level_interval_ms: int = 100
    shutdown_timeout_s: float = 10.0
    max_unread_messages: int = 5000
    max_audio_rate: float = 4.0
    audio_burst_s: float = 66.0
    max_session_s: float = 14400.0
    idle_timeout_s: float = 120.0
    max_final_load: float = 0.4
    stream_cost: float = 0.1
    late_final_s: float = 1.0


@dataclass(frozen=True)
class DispatcherConfig:
    """The ZeroMQ broker between the ingest and the workers."""

    worker_endpoint: str = "tcp://127.0.0.1:5555"
    job_endpoint: str = "tcp://127.0.0.1:5556"
    live_reserve_s: float = 10.0
    job_deadline_s: float = 120.0
    queue_deadline_s: float = 30.0
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    max_attempts: int = 3
    max_queued_jobs: int = 10000
    partial_reserve: int = 1


@dataclass(frozen=True)
class WorkersConfig:
    """The pool of worker processes and the ASR engine they run."""

    count: int | str = "auto"
    cpu_threads: int = 1
    model: str = "bundled"
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 5
    partial_beam_size: int = 1
    context_utterances: int = 2
    context_max_s: float = 15.0
    encoder_window: str = "fit"
    partial_encoder_window: str = "fit"
    window_tail_s: float = 8.0
    window_quantum_s: float = 2.0
    window_floor_s: float = 16.0
    partial_window_floor_s: float = 0.0
    fake_delay_ms: int = 50
    fake_stall_s: float = 0.0

    def resolved_count(self) -> int:
        """The number of worker processes, with ``"auto"`` meaning one per usable core."""
        if self.count == "auto":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return int(self.count)


@dataclass(frozen=True)
class SegmenterConfig:
    """Voice-activity detection and the cutting of streams into utterances."""

    vad_threshold: float = 0.5
    min_silence_ms: int = 300
    speech_pad_ms: int = 150
    min_speech_ms: int = 200
    max_utterance_s: float = 25.0
    first_partial_s: float = 0.3
    partial_interval_s: float = 0.8


@dataclass(frozen=True)
class BatchConfig:
    """``pipeline transcribe``: how recordings are cut into chunks for the workers."""

    max_chunk_s: float = 29.0
    max_gap_s: float = 0.3
    prompt_chars: int = 300
    reply_timeout_s: float = 300.0


@dataclass(frozen=True)
class SecurityConfig:
    """Who may use the service: workers (CurveZMQ keys), clients (API keys, origins), TLS."""

    keys_dir: str = ""
    worker_key: str = "local"
    api_keys: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    log_format: str = "text"
    max_auth_failures: int = 10
    auth_failure_window_s: float = 60.0

    def client_keys(self) -> tuple[str, ...]:
        """API keys from the config and from ``PIPELINE_API_KEYS`` (comma-separated)."""
        env = tuple(k.strip() for k in os.environ.get("PIPELINE_API_KEYS", "").split(",") if k.strip())
        return self.api_keys + env


@dataclass(frozen=True)
class Config:
    """The whole configuration of one pipeline."""

    server: ServerConfig = field(default_factory=ServerConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)


def _check_type(default: Any, value: Any, what: str) -> Any:
    """Accept ``value`` if it has the type of ``default`` (ints are fine for floats)."""
    if isinstance(default, tuple):  # a TOML array of strings
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, str) and default == "auto":
        ok = isinstance(value, (str, int))  # "auto" or a number, e.g. workers.count
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{what} must be of type {type(default).__name__}, not {value!r}")
    return value


def _build(cls: type[Any], table: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(fields)})")
        value = _check_type(getattr(cls(), key), value, f"{where}: key {key!r}")
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:  # pragma: no cover - guarded above
        raise ConfigError(f"{where}: {exc}") from exc


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from parsed TOML, rejecting unknown sections and keys."""
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        cls = type(getattr(Config(), name))
        kwargs[name] = _build(cls, table, f"{source} [{name}]")
    config = Config(**kwargs)
    validate(config, source)
    return config


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load a TOML config file; ``None`` gives the defaults.

    Raises:
        ConfigError: the file is missing, is not TOML, or has an unknown or bad key.
    """
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return from_dict(data, str(p))


def validate(config: Config, source: str = "<config>") -> None:
    """Check values that types alone cannot, so that bad ones fail at startup."""
    w = config.workers
    if w.count != "auto" and (not isinstance(w.count, int) or w.count < 0):
        raise ConfigError(f"{source} [workers]: count must be \"auto\" or a whole number >= 0, not {w.count!r}")
    if w.cpu_threads < 1:
        raise ConfigError(f"{source} [workers]: cpu_threads must be >= 1")
    if w.context_utterances < 0 or not 0.0 <= w.context_max_s <= 25.0:
        raise ConfigError(f"{source} [workers]: context_utterances must be >= 0 and context_max_s 0..25")
    for key in ("encoder_window", "partial_encoder_window"):
        if getattr(w, key) not in ("full", "fit"):
            raise ConfigError(f"{source} [workers]: {key} must be \"full\" or \"fit\", not {getattr(w, key)!r}")
    if w.window_tail_s < 0 or w.window_quantum_s <= 0:
        raise ConfigError(f"{source} [workers]: window_tail_s must be >= 0 and window_quantum_s > 0")
    for key in ("window_floor_s", "partial_window_floor_s"):
        if not 0.0 <= getattr(w, key) <= 30.0:
            raise ConfigError(f"{source} [workers]: {key} must be between 0 and 30 (Whisper's window)")
    if w.beam_size < 1 or w.partial_beam_size < 1:
        raise ConfigError(f"{source} [workers]: beam sizes must be >= 1")
    sv = config.server
    if min(sv.max_audio_rate, sv.audio_burst_s, sv.max_session_s, sv.idle_timeout_s) < 0 or sv.max_unread_messages < 1:
        raise ConfigError(f"{source} [server]: limits must be >= 0 (0 turns one off) and max_unread_messages >= 1")
    if sv.max_message_bytes < 1:
        raise ConfigError(f"{source} [server]: max_message_bytes must be >= 1")
    from .core.limits import densest_bytes_per_s, max_message_audio_s  # the core imports this module

    if sv.max_audio_rate and sv.audio_burst_s < (most := max_message_audio_s(sv.max_message_bytes)):
        raise ConfigError(
            f"{source} [server]: audio_burst_s ({sv.audio_burst_s:g} s) must hold one message of max_message_bytes "
            f"({sv.max_message_bytes} bytes: up to {most:.1f} s of audio in the densest format, "
            f"{densest_bytes_per_s():,.0f} bytes a second), or that message would be refused on a fresh "
            f"connection; raise audio_burst_s to {math.ceil(most)} or more, or lower max_message_bytes")
    d = config.dispatcher
    if d.partial_reserve < 0:
        raise ConfigError(f"{source} [dispatcher]: partial_reserve must be >= 0")
    if d.job_deadline_s < 0 or d.queue_deadline_s < 0:
        raise ConfigError(f"{source} [dispatcher]: job_deadline_s and queue_deadline_s must be >= 0 (0: none)")
    sec = config.security
    if bool(sec.tls_cert) != bool(sec.tls_key):
        raise ConfigError(f"{source} [security]: tls_cert and tls_key go together")
    if sec.log_format not in ("text", "json"):
        raise ConfigError(f"{source} [security]: log_format must be \"text\" or \"json\"")
    if sec.max_auth_failures < 0 or sec.auth_failure_window_s < 0:
        raise ConfigError(f"{source} [security]: max_auth_failures and auth_failure_window_s must be >= 0 (0: off)")
    b = config.batch
    if not 1.0 <= b.max_chunk_s <= 30.0 or b.max_gap_s < 0 or b.prompt_chars < 0 or b.reply_timeout_s <= 0:
        raise ConfigError(f"{source} [batch]: max_chunk_s must be 1..30, max_gap_s and prompt_chars >= 0, "
                          "reply_timeout_s > 0")
    s = config.segmenter
    if not 0.0 < s.vad_threshold < 1.0:
        raise ConfigError(f"{source} [segmenter]: vad_threshold must be between 0 and 1")
    if s.partial_interval_s <= 0 or s.first_partial_s <= 0:
        raise ConfigError(f"{source} [segmenter]: partial intervals must be > 0")
    if not 1.0 <= s.max_utterance_s <= 30.0:
        raise ConfigError(f"{source} [segmenter]: max_utterance_s must be between 1 and 30 (Whisper's window)")
    if not 0 <= config.server.port <= 65535:
        raise ConfigError(f"{source} [server]: port must be between 0 and 65535")
    if not 0.0 <= sv.max_final_load <= 1.0 or sv.stream_cost <= 0 or sv.late_final_s <= 0:
        raise ConfigError(f"{source} [server]: max_final_load must be 0..1 (0: off), stream_cost and "
                          "late_final_s > 0")
    if config.server.max_sessions < 1 or config.server.max_sessions_per_address < 0:
        raise ConfigError(f"{source} [server]: max_sessions must be >= 1 and max_sessions_per_address >= 0 (0: no cap)")
    if config.dispatcher.heartbeat_interval_s <= 0 or config.dispatcher.heartbeat_liveness < 1:
        raise ConfigError(f"{source} [dispatcher]: heartbeat settings must be positive")
    if config.dispatcher.max_attempts < 1:
        raise ConfigError(f"{source} [dispatcher]: max_attempts must be >= 1")


def override(config: Config, section: str, **changes: Any) -> Config:
    """Return ``config`` with some keys of one section replaced (``None`` values are skipped)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return config
    updated = dataclasses.replace(getattr(config, section), **changes)
    new = dataclasses.replace(config, **{section: updated})
    validate(new, "command line")
    return new

"""The error tree of the pipeline.

Every error the pipeline raises on purpose derives from :class:`PipelineError`::

    PipelineError
    ├── ConfigError      a config file or flag is wrong; startup stops with its message
    ├── ProtocolError    a client or ZeroMQ message is malformed; it carries a wire code
    ├── AudioError       an audio file or frame cannot be decoded
    └── WorkerLost       a job's worker died and the job ran out of attempts
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error raised on purpose by the pipeline."""


class ConfigError(PipelineError):
    """A configuration file, key or value is invalid."""


class ProtocolError(PipelineError):
    """A message broke the client protocol or the ZeroMQ schema.

    Attributes:
        code: the machine-readable code sent to the client in an ``error`` message.
        param: the field at fault, as a dotted path (``session.audio.input.format.rate``),
            for protocols whose errors name it (OpenAI Realtime); None otherwise.
    """

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class AudioError(PipelineError):
    """Audio could not be decoded or resampled."""


class WorkerLost(PipelineError):
    """A job was lost with its worker more times than allowed."""

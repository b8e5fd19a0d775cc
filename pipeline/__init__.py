"""On-premises streaming speech-to-text: WebSocket ingest, ZeroMQ dispatcher, faster-whisper workers."""

__version__ = "0.1.0"

"""The ``pipeline`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from . import config as config_mod
from .errors import PipelineError

# Named exit codes (arq's habit): scripts can tell failure kinds apart.
EXIT_OK = 0
EXIT_SERVER_ERROR = 1  # the server answered with an error, or the run failed
EXIT_USAGE = 2  # bad input on our side: config, file, URL


@click.group()
@click.version_option(package_name="stt-pipeline")
def main() -> None:
    """On-premises streaming speech-to-text: WebSocket in, faster-whisper workers, transcripts out."""


def _load_config(path: str | None) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file (see configs/default.toml).")
@click.option("--host", help="Interface to listen on [server.host].")
@click.option("--port", type=int, help="WebSocket port; 0 picks a free one [server.port].")
@click.option("--workers", type=int, help="Local worker processes [workers.count; default: one per core].")
@click.option("--model", help='"bundled" (tiny.en), a faster-whisper model name, or a model folder [workers.model].')
@click.option("--worker-endpoint", help="ZeroMQ endpoint workers connect to [dispatcher.worker_endpoint].")
@click.option("--job-endpoint", help='ZeroMQ endpoint for `pipeline transcribe --connect`; "" for none [dispatcher.job_endpoint].')
@click.option("--max-audio-rate", type=click.FloatRange(min=0),
              help="Fastest a client may stream, × real time, sustained; 0: no limit [server.max_audio_rate].")
@click.option("--max-sessions-per-address", type=click.IntRange(min=0),
              help="Concurrent sessions from one client address; 0: no cap [server.max_sessions_per_address].")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log lines as text or JSON [security.log_format].")
def run(config_path: str | None, host: str | None, port: int | None, workers: int | None,
        model: str | None, worker_endpoint: str | None, job_endpoint: str | None,
        max_audio_rate: float | None, max_sessions_per_address: int | None, log_format: str | None) -> None:
    """Start the ingest, the dispatcher and the worker pool on this machine."""
    from . import service

    cfg = _load_config(config_path)
    try:
        cfg = config_mod.override(cfg, "server", host=host, port=port, max_audio_rate=max_audio_rate,
                                  max_sessions_per_address=max_sessions_per_address)
        cfg = config_mod.override(cfg, "workers", count=workers, model=model)
        cfg = config_mod.override(cfg, "dispatcher", worker_endpoint=worker_endpoint, job_endpoint=job_endpoint)
        cfg = config_mod.override(cfg, "security", log_format=log_format)
        if cfg.workers.model not in ("fake",) and cfg.workers.resolved_count() > 0:
            from workers.engine import resolve_model

            resolve_model(cfg.workers.model)  # a bad path fails here, not in every worker
        if cfg.security.keys_dir:
            from .keys import load_server

            load_server(cfg.security.keys_dir)  # a missing or unreadable folder stops here
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(service.run(cfg))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--url", default="ws://127.0.0.1:8765/v1/stream", show_default=True, help="The server's stream endpoint.")
@click.option("--speed", type=click.FloatRange(min=0.1, max=100.0), default=1.0, show_default=True,
              help="Send this many times faster than real time.")
@click.option("--json", "as_json", is_flag=True, help="Print every server message as one JSON line.")
@click.option("--words", is_flag=True, help="Ask for word timestamps in finals.")
@click.option("--language", default="en", show_default=True)
@click.option("--token", envvar="PIPELINE_TOKEN", help="API key, sent as Authorization: Bearer (or $PIPELINE_TOKEN).")
@click.option("--cafile", type=click.Path(dir_okay=False, exists=True), help="CA certificate to trust for wss://.")
def stream(file: str, url: str, speed: float, as_json: bool, words: bool, language: str, token: str | None,
           cafile: str | None) -> None:
    """Stream an audio FILE (WAV, FLAC, MP3, any rate) and print its transcript live."""
    import ssl

    from .client import load_audio, stream as stream_audio

    headers = {"Authorization": f"Bearer {token}"} if token else None
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        audio = load_audio(file)
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    errors: list[dict[str, Any]] = []
    tty = sys.stdout.isatty()

    def show(message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            errors.append(message)
        if as_json:
            click.echo(json.dumps(message))
        elif kind == "partial" and tty:
            click.echo(f"\r\033[K… {message['text']}", nl=False)
        elif kind == "final":
            prefix = "\r\033[K" if tty else ""
            click.echo(f"{prefix}[{message['start']:7.2f} → {message['end']:7.2f}] {message['text']}")
        elif kind == "error":
            click.echo(f"error: {message['code']}: {message['message']}", err=True)

    try:
        result = asyncio.run(stream_audio(url, audio, headers, context, speed=speed, on_message=show,
                                          start={"language": language, "words": words}))
    except (OSError, asyncio.TimeoutError) as exc:
        click.echo(f"error: cannot stream to {url}: {exc or type(exc).__name__}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # websockets' handshake and close errors
        click.echo(f"error: {url}: {exc}", err=True)
        sys.exit(EXIT_SERVER_ERROR)
    if result.timed_out:
        click.echo("error: the server did not finish the stream in time", err=True)
        sys.exit(EXIT_SERVER_ERROR)
    if result.closed is not None:
        click.echo(f"error: the server closed the connection ({result.closed[0]} {result.closed[1]})", err=True)
        sys.exit(EXIT_SERVER_ERROR)
    sys.exit(EXIT_SERVER_ERROR if errors else EXIT_OK)


@main.command()
@click.option("--url", help="The server's stream endpoint (or use --spawn).")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="Folder with streams.jsonl and/or clips.tsv, or of plain audio files.")
@click.option("--clients", type=click.IntRange(min=1, max=1000), default=1, show_default=True,
              help="Concurrent clients (the first step with --find-capacity).")
@click.option("--speed", type=click.FloatRange(min=0.1, max=50.0), default=1.0, show_default=True,
              help="Pace of each client, times real time.")
@click.option("--duration", type=click.FloatRange(min=1.0, max=3600.0),
              help="Seconds to run; clients loop over files. Without it each client streams one file.")
@click.option("--stagger", type=click.FloatRange(min=0.0, max=60.0), default=0.5, show_default=True,
              help="Seconds between client starts.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON report here (docs/loadtest.md).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of final latency over time here.")
@click.option("--spawn", is_flag=True, help="Start a `pipeline run` for the test and stop it after.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="Config for --spawn.")
@click.option("--server-pid", type=int, help="Pid of a running `pipeline run`, to sample its CPU and memory.")
@click.option("--find-capacity", is_flag=True, help="Add clients step by step until the target is missed.")
@click.option("--p95-final-ms", type=float, default=1000.0, show_default=True, help="Latency target for --find-capacity.")
@click.option("--step", type=click.IntRange(min=1), default=2, show_default=True, help="Clients added per step.")
@click.option("--max-clients", type=click.IntRange(min=1, max=1000), default=32, show_default=True)
def loadtest(url: str | None, corpus: str, clients: int, speed: float, duration: float | None, stagger: float,
             report: str | None, plot: str | None, spawn: bool, config_path: str | None, server_pid: int | None,
             find_capacity: bool, p95_final_ms: float, step: int, max_clients: int) -> None:
    """Stream a corpus with many clients; measure latency, losses, WER and server resources."""
    from .loadtest import app

    if not url and not spawn:
        raise click.UsageError("give --url of a running pipeline, or --spawn")
    if url and not url.startswith(("ws://", "wss://")):
        raise click.UsageError("--url must be a ws:// or wss:// URL")
    opts = app.Options(url=url, corpus=corpus, clients=clients, speed=speed, duration_s=duration, stagger_s=stagger,
                       report=report, plot=plot, spawn=spawn, config=config_path, server_pid=server_pid,
                       find_capacity=find_capacity, p95_final_ms=p95_final_ms, step=step, max_clients=max_clients)
    try:
        result = app.run(opts)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    if "steps" not in result and (result["errors"] or result["utterances"]["lost"]):
        sys.exit(EXIT_SERVER_ERROR)


#: `pipeline transcribe` exits with the number of files that failed, capped here (the
#: shell reserves 126 and up).
EXIT_MAX_FAILED = 125
EXIT_INTERRUPTED = 130


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder for the transcripts (folders given as PATH keep their layout). Default: next to each file.")
@click.option("--format", "formats_", default="txt", show_default=True,
              help="Comma-separated output formats: txt, srt, vtt, json.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes to spawn [workers.count; default: one per core].")
@click.option("--connect", help="Send the work to a running `pipeline run` at this job endpoint, e.g. tcp://127.0.0.1:5556.")
@click.option("--parallel", type=click.IntRange(min=1),
              help="Chunks in flight at once. Default: the spawned workers' count; with --connect, 2.")
@click.option("--language", default="en", show_default=True, help="Language of the speech (multilingual models).")
@click.option("--word-timestamps", is_flag=True, help="Put each word's start and end in the json output.")
@click.option("--skip-existing", is_flag=True, help="Skip files whose outputs all exist (resumes an interrupted run).")
@click.option("--model", help='"bundled" (tiny.en), a faster-whisper model name, or a model folder [workers.model].')
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
def transcribe(paths: tuple[str, ...], out_dir: str | None, formats_: str, workers: int | None, connect: str | None,
               parallel: int | None, language: str, word_timestamps: bool, skip_existing: bool, model: str | None,
               config_path: str | None) -> None:
    """Transcribe recordings (files, or folders searched recursively) through the worker pool.

    Exits with the number of files that failed (0 when all went well), 130 if interrupted.
    """
    import logging
    import time
    from pathlib import Path

    from rich.console import Console

    from . import formats, transcribe as tr
    from .service import stop_on_signals
    from .transcribe_view import View, summary

    wanted = tuple(dict.fromkeys(f.strip().lower() for f in formats_.split(",") if f.strip()))
    unknown = [f for f in wanted if f not in formats.FORMATS]
    if unknown or not wanted:
        raise click.BadParameter(f"unknown format(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(formats.FORMATS)}", param_hint="--format")
    cfg = _load_config(config_path)
    try:
        cfg = config_mod.override(cfg, "workers", count=workers, model=model)
        if not connect and cfg.workers.model != "fake":
            from workers.engine import resolve_model

            resolve_model(cfg.workers.model)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    console = Console(stderr=True)
    inputs, problems = tr.find_inputs(paths)
    for p in problems:
        console.print(f"[red]failed[/red]: {p.input.path}: {p.reason}", highlight=False, soft_wrap=True)
    if not inputs:
        console.print("nothing to transcribe", highlight=False)
        sys.exit(min(len(problems), EXIT_MAX_FAILED))
    options = tr.Options(out_dir=Path(out_dir) if out_dir else None, formats=wanted, language=language,
                         word_timestamps=word_timestamps, skip_existing=skip_existing,
                         parallel=parallel or (2 if connect else max(1, cfg.workers.resolved_count())))
    total_s = sum(tr.probe_duration(i.path) for i in inputs)

    async def go() -> tuple[list[tr.Outcome], int]:
        stop = asyncio.Event()
        stop_on_signals(stop)  # the files already written stay; the rest is cancelled
        with View(console, len(inputs), total_s) as view:
            outcomes = await tr.transcribe(cfg, inputs, options, connect, view.update, stop)
        return outcomes, int(stop.is_set())

    t0 = time.monotonic()
    try:
        outcomes, interrupted = asyncio.run(go())
    except PipelineError as exc:
        console.print(f"error: {exc}", highlight=False)
        sys.exit(min(len(inputs) + len(problems), EXIT_MAX_FAILED))
    summary(console, problems + outcomes, time.monotonic() - t0)
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    failed = len(problems) + sum(o.status == "failed" for o in outcomes)
    sys.exit(min(failed, EXIT_MAX_FAILED))


@main.command()
@click.option("--connect", "endpoint", required=True,
              help="The dispatcher's worker endpoint on the front-end host, e.g. tcp://10.0.0.5:5555.")
@click.option("--processes", type=click.IntRange(min=1), help="Worker processes [workers.count; default: one per core].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file ([workers], [security]).")
@click.option("--model", help='"bundled" (tiny.en), a faster-whisper model name, or a model folder [workers.model].')
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False), help="CurveZMQ keys folder [security.keys_dir].")
@click.option("--key-name", help="This host's key pair in KEYS/workers/ [security.worker_key].")
def worker(endpoint: str, processes: int | None, config_path: str | None, model: str | None,
           keys_dir: str | None, key_name: str | None) -> None:
    """Join a running pipeline's dispatcher from this machine with a pool of worker processes."""
    from . import service

    cfg = _load_config(config_path)
    try:
        cfg = config_mod.override(cfg, "workers", count=processes, model=model)
        cfg = config_mod.override(cfg, "security", keys_dir=keys_dir, worker_key=key_name)
        if cfg.workers.model != "fake":
            from workers.engine import resolve_model

            resolve_model(cfg.workers.model)
        if cfg.security.keys_dir:
            from .keys import load_worker

            load_worker(cfg.security.keys_dir, cfg.security.worker_key)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(service.run_workers(cfg, endpoint))


@main.group()
def keys() -> None:
    """CurveZMQ keys that let worker hosts join, and only them."""


@keys.command("init")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--worker", "workers_", multiple=True, help="A worker host's key name (repeat); \"local\" is always made.")
@click.option("--force", is_flag=True, help="Overwrite keys already there.")
def keys_init(folder: str, workers_: tuple[str, ...], force: bool) -> None:
    """Make the server's key pair and worker key pairs in FOLDER, and allow those workers."""
    from .keys import init_keys

    try:
        written = init_keys(folder, list(workers_), force)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(path)
    click.echo(f"front end: security.keys_dir = \"{folder}\"; a worker host needs {folder}/server.key and "
               f"{folder}/workers/NAME.key_secret")


@keys.command("add")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.argument("name")
def keys_add(folder: str, name: str) -> None:
    """Make a key pair for one more worker host NAME and allow it (restart the front end)."""
    from .keys import add_worker

    try:
        for path in add_worker(folder, name):
            click.echo(path)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None

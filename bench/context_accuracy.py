"""Benchmark: how each utterance is decoded, and what that does to accuracy and cost.

    python bench/context_accuracy.py [--corpus ../shared/corpus] [--modes alone,prompt,prefix1,prefix2,fit2]
                                     [--set streams|clips]

Cuts the corpus streams (or, with ``--set clips``, each short clip on its own, as a client
that opens one connection per sentence would send it) into utterances with the pipeline's own segmenter (Silero VAD,
default settings), then decodes each final with the bundled tiny.en (int8, 1 thread,
beam 5) in one of these ways, and prints the WER (Whisper's English normaliser, jiwer)
and CPU seconds per decode:

* ``alone``: the utterance's audio only;
* ``prompt``: plus the stream's earlier text (200 chars) as ``initial_prompt``;
* ``prefixN``: plus the audio of the N utterances before it, their text forced as the
  decoder's prefix (what the pipeline does, with N = ``context_utterances``);
* ``fitN``: ``prefixN`` through the worker's fitted encoder window (``encoder_window = "fit"``);
  ``fitN@F`` with a window of at least F seconds (``window_floor_s = F``); a trailing
  ``!`` turns the quality gate off (``fitN!``), to see what it saves.

Every final goes through the worker's quality gate; the fallbacks it took are counted.

The offline reference is plain ``WhisperModel.transcribe`` of the whole files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--modes", default="offline,alone,prompt,prefix1,prefix2,fit2,fit2@20")
    ap.add_argument("--files", help="comma-separated stream files to use (default: all)")
    ap.add_argument("--set", choices=("streams", "clips"), default="streams",
                    help="long streams (context from earlier utterances) or short clips, one at a time")
    ap.add_argument("--beam", type=int, default=5, help="beam size of every decode")
    ap.add_argument("--tail", type=float, default=8.0, help="window_tail_s of the fitted window")
    args = ap.parse_args()

    import jiwer
    from faster_whisper.audio import decode_audio
    from whisper_normalizer.english import EnglishTextNormalizer

    from pipeline.config import SegmenterConfig, WorkersConfig
    from pipeline.core.segmenter import Segmenter
    from pipeline.vad import SileroStream
    from workers.engine import WhisperEngine

    normalize = EnglishTextNormalizer()
    if args.set == "clips":
        rows = [line.split("\t") for line in (Path(args.corpus) / "clips.tsv").read_text().splitlines() if line]
        streams = [{"file": row[1], "text": row[3]} for row in rows]
    else:
        streams = [json.loads(line) for line in (Path(args.corpus) / "streams.jsonl").read_text().splitlines()
                   if line]
    if args.files:
        keep = set(args.files.split(","))
        streams = [s for s in streams if Path(s["file"]).name in keep]
    cut: dict[str, tuple] = {}
    for s in streams:
        audio = decode_audio(str(Path(args.corpus) / s["file"]))
        seg = Segmenter(SegmenterConfig(), SileroStream(), partials=False)
        cuts = [c for i in range(0, len(audio), 1600) for c in seg.feed(audio[i : i + 1600])] + seg.flush()
        cut[s["file"]] = (audio, cuts)
    engines = {w: WhisperEngine(WorkersConfig(encoder_window=w, window_tail_s=args.tail)) for w in ("full", "fit")}

    for mode in args.modes.split(","):
        refs, hyps, cpu, decodes, fallbacks = [], [], 0.0, 0, 0
        gate = not mode.endswith("!")
        mode, _, floor = mode.rstrip("!").partition("@")
        for s in streams:
            audio, cuts = cut[s["file"]]
            if mode == "offline":
                t0 = time.process_time()
                segments, _ = engines["full"].model.transcribe(audio, language="en")
                text = " ".join(x.text.strip() for x in segments)
                cpu += time.process_time() - t0
                decodes += 1
                refs.append(normalize(s["text"]))
                hyps.append(normalize(text))
                continue
            texts: list[str] = []
            for k, c in enumerate(cuts):
                options: dict = {"beam_size": args.beam, "window": "fit" if mode.startswith("fit") else "full",
                                 "window_floor_s": float(floor or 0), "fallback": gate}
                piece = c.audio
                if mode == "prompt":
                    options["prompt"] = " ".join(texts)[-200:]
                elif mode.startswith(("prefix", "fit")) and k > 0:
                    n = int(mode[-1])
                    j = max(0, k - n)
                    while j < k and not texts[j]:  # only an unbroken run of non-empty texts
                        j += 1
                    if j < k:
                        piece = audio[cuts[j].start : c.end]
                        options.update(prefix=" ".join(texts[j:k]), context_s=(c.start - cuts[j].start) / 16000)
                t0 = time.process_time()
                result = engines[options["window"]].transcribe(piece, options)
                cpu += time.process_time() - t0
                texts.append(result["text"])
                fallbacks += bool(result.get("fallbacks"))
                decodes += 1
            refs.append(normalize(s["text"]))
            hyps.append(normalize(" ".join(texts)))
        label = (f"{mode}@{floor}" if floor else mode) + ("" if gate else "!")
        print(f"{label:10s} WER {100 * jiwer.wer(refs, hyps):6.2f} %   CPU per decode {cpu / decodes:.3f} s"
              f"   ({decodes} decodes, {fallbacks} with a fallback)", flush=True)


if __name__ == "__main__":
    main()

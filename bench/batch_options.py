"""Benchmark: how recordings are cut and decoded for ``pipeline transcribe``, and what it costs.

    python bench/batch_options.py [--corpus ../shared/corpus] [--variants gap=0.3,gap=1.0,prompt=0,...]

Cuts the corpus streams with the pipeline's segmenter, packs the utterances into chunks
(``pipeline/core/batch.py``) and decodes the chunks of each file in order, one thread,
the bundled tiny.en, in one process: no pool, so the figures are the decoding's own.
Prints the WER (Whisper's English normaliser, jiwer), the CPU seconds spent decoding,
and the chunk count for each variant. A variant changes one thing from the default
(gap 0.3 s, prompt 300 characters, beam 5, no timestamp tokens, batch 1):

* ``gap=S``: pauses between utterances in a chunk shortened to S seconds (100: kept whole);
* ``prompt=N``: the text before the chunk as prompt, N characters (0: none);
* ``beam=N``: beam size;
* ``timestamps=1``: one pass with timestamp tokens instead of without;
* ``batch=N``: N files' chunks decoded in one CTranslate2 call (prompts cut to one length).
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
    ap.add_argument("--variants", default="default,gap=1.0,gap=100,prompt=0,prompt=150,prompt=800,beam=1,"
                                          "timestamps=1,batch=2,batch=4")
    args = ap.parse_args()

    import jiwer
    import numpy as np
    from faster_whisper.audio import decode_audio
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens
    from whisper_normalizer.english import EnglishTextNormalizer

    from pipeline.config import SegmenterConfig, WorkersConfig
    from pipeline.core.batch import plan_chunks
    from pipeline.core.segmenter import Segmenter
    from pipeline.transcribe import chunk_audio
    from pipeline.vad import SileroStream
    from workers.engine import WhisperEngine

    normalize = EnglishTextNormalizer()
    model = WhisperEngine(WorkersConfig(cpu_threads=1)).model
    tok = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    suppress = list(get_suppressed_tokens(tok, [-1]))
    streams = [json.loads(line) for line in (Path(args.corpus) / "streams.jsonl").read_text().splitlines() if line]
    audio = {s["file"]: decode_audio(str(Path(args.corpus) / s["file"])) for s in streams}
    spans = {}
    for s in streams:
        seg = Segmenter(SegmenterConfig(), SileroStream(), partials=False)
        a = audio[s["file"]]
        cuts = [c for i in range(0, len(a), 160000) for c in seg.feed(a[i : i + 160000])] + seg.flush()
        spans[s["file"]] = [(c.start, c.end) for c in cuts]

    def decode(pieces: list, prompts: list[str], beam: int, stamps: bool) -> list[str]:
        feats = np.stack([model.feature_extractor(p, padding=max(0, 480000 - len(p)))[:, :3000] for p in pieces])
        encoded = model.encode(feats)
        starts = []
        for prompt in prompts:
            start = [*tok.sot_sequence] + ([] if stamps else [tok.no_timestamps])
            if prompt:
                start = [tok.sot_prev, *tok.encode(" " + prompt.strip())[-223:], *start]
            starts.append(start)
        shortest = min(len(x) for x in starts)  # CTranslate2 wants <|startoftranscript|> at one position
        starts = [[tok.sot_prev, *x[len(x) - shortest + 1:]] if x[0] == tok.sot_prev else x for x in starts]
        if len({x.index(tok.sot) for x in starts}) > 1:
            starts = [x[x.index(tok.sot):] for x in starts]
        results = model.model.generate(encoded, starts, beam_size=beam, max_length=448, suppress_blank=True,
                                       suppress_tokens=suppress)
        return [tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]).strip() for r in results]

    for variant in args.variants.split(","):
        opts = {"gap": 0.3, "prompt": 300, "beam": 5, "timestamps": 0, "batch": 1}
        if variant != "default":
            key, value = variant.split("=")
            opts[key] = float(value) if key == "gap" else int(value)
        chunks = {f: plan_chunks(spans[f], 29.0, opts["gap"]) for f in audio}
        texts: dict[str, list[str]] = {f: [] for f in audio}
        cpu, count = 0.0, 0
        for k in range(max(len(c) for c in chunks.values())):
            group = [f for f in audio if k < len(chunks[f])]
            for i in range(0, len(group), int(opts["batch"])):
                files = group[i : i + int(opts["batch"])]
                pieces = [chunk_audio(audio[f], chunks[f][k]) for f in files]
                prompts = [" ".join(texts[f])[-int(opts["prompt"]):] if opts["prompt"] else "" for f in files]
                t0 = time.process_time()
                for f, text in zip(files, decode(pieces, prompts, int(opts["beam"]), bool(opts["timestamps"]))):
                    texts[f].append(text)
                cpu += time.process_time() - t0
                count += len(files)
        wer = jiwer.wer([normalize(s["text"]) for s in streams], [normalize(" ".join(texts[s["file"]])) for s in streams])
        print(f"{variant:14s} WER {100 * wer:6.2f} %   decode CPU {cpu:6.2f} s   chunks {count}", flush=True)


if __name__ == "__main__":
    main()

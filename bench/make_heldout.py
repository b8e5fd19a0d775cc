"""Build the held-out corpus: Harvard lists 4-10, in five of flite's voices.

    python bench/make_heldout.py OUTDIR [--corpus ../shared/corpus]

The shared corpus (lists 1-3, four voices) is what the project was tuned on; this is
speech it has never seen (other sentences, and the kal voice besides the shared
corpus's four), for checking that a tuning holds (issue 14). It runs the
shared corpus's ``make_corpus.py`` (needs Debian's flite and sox) on
``bench/data/heldout.tsv`` with every voice, and two streams of all 70 sentences (about
4.5 minutes each, long enough for 4-minute load steps).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("make_corpus", Path(args.corpus) / "make_corpus.py")
    make_corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_corpus)
    make_corpus.VOICES = ["kal", "slt", "rms", "awb", "kal16"]  # awb_time can only tell the time
    sys.argv = ["make_corpus.py", str(ROOT / "bench" / "data" / "heldout.tsv"), args.outdir,
                "--streams", "2", "--seed", "14"]
    make_corpus.main()


if __name__ == "__main__":
    main()

"""Turning what the load-test clients saw into the report (docs/loadtest.md).

Pure functions over recorded timings: no sockets and no clock, so the statistics are tested
with scripted inputs whose answers are known.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import SAMPLE_RATE
from .corpus import Item, Utterance


@dataclass
class Pass:
    """One client streaming one file once (one start … stopped stream)."""

    client: int
    item: Item
    sent: list[tuple[float, int]] = field(default_factory=list)  # (time, samples sent so far)
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, message)
    failure: str | None = None  # an exception or an unexpected close
    refused: str | None = None  # the server's 503 at the handshake, with its reason: not a failure

    def sent_at(self, sample: int) -> float | None:
        """When the frame holding ``sample`` was sent; None if it never was."""
        for t, total in self.sent:
            if total >= sample:
                return t
        return None

    @property
    def sent_s(self) -> float:
        return self.sent[-1][1] / SAMPLE_RATE if self.sent else 0.0


@dataclass
class UtteranceOutcome:
    client: int
    reference: Utterance
    finals: int  # how many finals overlap it: 1 is right, 0 is lost, 2+ duplicated or split
    final_latency_s: float | None = None
    final_at: float | None = None
    first_partial_s: float | None = None


def has_words(final: dict[str, Any]) -> bool:
    """Whether a final holds a word: one that is empty or only punctuation has lost its utterance."""
    return any(ch.isalnum() for ch in str(final.get("text", "")))


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50, p95, max and mean, scaled (seconds to milliseconds by default); None when empty."""
    if not values:
        return {"p50": None, "p95": None, "max": None, "mean": None, "count": 0}
    a = np.asarray(values, dtype=np.float64) * scale
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
        "mean": round(float(a.mean()), 1),
        "count": int(len(a)),
    }


def judge(p: Pass) -> tuple[list[UtteranceOutcome], list[float]]:
    """Match one pass's finals to its reference utterances by overlap of stream time.

    Returns:
        The outcome of every reference utterance whose audio was wholly sent, and the
        intervals between successive partials of each utterance.
    """
    finals = [(t, m) for t, m in p.messages if m.get("type") == "final"]
    partials: dict[int, list[float]] = defaultdict(list)
    for t, m in p.messages:
        if m.get("type") == "partial":
            partials[int(m["utterance_id"])].append(t)
    intervals = [b - a for times in partials.values() for a, b in zip(times, times[1:])]
    outcomes = []
    for u in p.item.utterances:
        end_sample = int(round(u.end_s * SAMPLE_RATE))
        if end_sample > _total(p):
            continue  # the run ended before this utterance was wholly sent
        over = [(t, m) for t, m in finals if m["start"] < u.end_s and m["end"] > u.start_s]
        outcome = UtteranceOutcome(p.client, u, len(over))
        if over:
            t, m = over[0]
            last_sent = p.sent_at(end_sample)
            first_sent = p.sent_at(int(u.start_s * SAMPLE_RATE))
            outcome.final_at = t
            if last_sent is not None:
                outcome.final_latency_s = t - last_sent
            mine = partials.get(int(m["utterance_id"]), [])
            if mine and first_sent is not None:
                outcome.first_partial_s = min(mine) - first_sent
        outcomes.append(outcome)
    return outcomes, intervals


def _total(p: Pass) -> int:
    return p.sent[-1][1] if p.sent else 0


def transcripts(p: Pass) -> tuple[str, str] | None:
    """(reference, hypothesis) for the part of the pass that was sent, or None without a reference."""
    if p.item.text is None or not p.sent:
        return None
    sent_s = p.sent_s
    done = [u for u in p.item.utterances if u.end_s <= sent_s]
    if not done:
        return None
    if len(done) == len(p.item.utterances):
        return p.item.text, " ".join(m["text"] for _, m in p.messages if m.get("type") == "final")
    # Cut short: the utterances wholly sent, against the finals that start before the
    # last of them ends (the final of the cut-off utterance would only add insertions).
    until = done[-1].end_s
    hyp = " ".join(m["text"] for _, m in p.messages if m.get("type") == "final" and m["start"] < until)
    return " ".join(u.text for u in done), hyp


def word_error_rate(pairs: list[tuple[str, str]]) -> float | None:
    """WER over all pairs, normalised with Whisper's English normaliser (jiwer computes it)."""
    if not pairs:
        return None
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    refs, hyps = [], []
    for ref, hyp in pairs:
        r = normalize(ref)
        if r.strip():
            refs.append(r)
            hyps.append(normalize(hyp))
    return round(float(jiwer.wer(refs, hyps)), 4) if refs else None


def report(passes: list[Pass], clients: int, wall_s: float, t0: float, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report; ``t0`` is the run's start on the same clock as the recorded times."""
    outcomes: list[UtteranceOutcome] = []
    intervals: list[float] = []
    for p in passes:
        judged, gaps = judge(p)
        outcomes += judged
        intervals += gaps
    errors = [m for p in passes for _, m in p.messages if m.get("type") == "error"]
    codes: dict[str, int] = defaultdict(int)
    for m in errors:
        codes[str(m.get("code"))] += 1
    failures = [p.failure for p in passes if p.failure]
    refused = [p.refused for p in passes if p.refused]
    late = t0 + 0.75 * wall_s  # the last quarter of the run: is latency still climbing?
    series: dict[str, list[list[float]]] = defaultdict(list)
    for o in outcomes:
        if o.final_latency_s is not None and o.final_at is not None:
            series[str(o.client)].append([round(o.final_at - t0, 3), round(o.final_latency_s * 1000, 1)])
    return {
        "clients": clients,
        "audio_s": round(sum(p.sent_s for p in passes), 2),
        "wall_s": round(wall_s, 2),
        "streams": len(passes),
        "utterances": {
            "expected": len(outcomes),
            "finalized": sum(1 for o in outcomes if o.finals >= 1),
            "lost": sum(1 for o in outcomes if o.finals == 0),
            "duplicated": sum(1 for o in outcomes if o.finals > 1),
            "empty": sum(1 for p in passes for _, m in p.messages if m.get("type") == "final" and not has_words(m)),
        },
        "latency_ms": {
            "final": percentiles([o.final_latency_s for o in outcomes if o.final_latency_s is not None]),
            "final_last_quarter": percentiles([o.final_latency_s for o in outcomes if o.final_latency_s is not None
                                               and o.final_at is not None and o.final_at >= late]),
            "first_partial": percentiles([o.first_partial_s for o in outcomes if o.first_partial_s is not None]),
            "partial_interval": percentiles(intervals),
        },
        "wer": word_error_rate([t for p in passes if (t := transcripts(p)) is not None]),
        "errors": len(errors) + len(failures),
        "error_codes": dict(codes),
        "disconnects": len(failures),
        "refused": len(refused),
        "refusals": refused[:5],
        "failures": failures[:20],
        **(resources or {"cpu_percent": None, "rss_mb": None}),
        "final_latency_series": dict(series),
    }

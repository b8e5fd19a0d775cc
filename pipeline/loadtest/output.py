"""What a person sees of a load test: the terminal table and the latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def table(report: dict[str, Any], title: str = "Load test") -> Table:
    lat = report["latency_ms"]
    u = report["utterances"]
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("clients", str(report["clients"])),
        ("audio streamed / wall time", f"{report['audio_s']:.0f} s / {report['wall_s']:.0f} s"),
        ("utterances expected / finalized", f"{u['expected']} / {u['finalized']}"),
        ("lost / duplicated / empty", f"{u['lost']} / {u['duplicated']} / {u.get('empty', 0)}"),
        ("final latency p50 / p95 / max (ms)", f"{_ms(lat['final']['p50'])} / {_ms(lat['final']['p95'])} / {_ms(lat['final']['max'])}"),
        ("first partial p50 / p95 (ms)", f"{_ms(lat['first_partial']['p50'])} / {_ms(lat['first_partial']['p95'])}"),
        ("partial interval p50 / p95 (ms)", f"{_ms(lat['partial_interval']['p50'])} / {_ms(lat['partial_interval']['p95'])}"),
        ("word error rate", "—" if report["wer"] is None else f"{100 * report['wer']:.1f} %"),
        ("final p95 in the run's last quarter (ms)", _ms(lat.get("final_last_quarter", {}).get("p95"))),
        ("errors / disconnects / refused at the handshake",
         f"{report['errors']} / {report['disconnects']} / {report.get('refused', 0)}"),
    ]
    cpu, rss = report.get("cpu_percent"), report.get("rss_mb")
    if cpu:
        rows.append(("CPU % ingest (mean) / workers (sum of means)",
                     f"{cpu['ingest']['mean']:.0f} / {cpu['workers_total_mean']:.0f}"))
    if rss:
        workers = [v["max"] for k, v in rss.items() if k != "ingest"]
        rows.append(("RSS MB ingest / largest worker (max)",
                     f"{rss['ingest']['max']:.0f} / {max(workers) if workers else 0:.0f}"))
    for name, value in rows:
        t.add_row(name, value)
    return t


def capacity_table(steps: list[dict[str, Any]], target_ms: float) -> Table:
    t = Table(title=f"Capacity (final p95 ≤ {target_ms:.0f} ms, nothing lost)")
    for col in ("clients", "final p50", "final p95", "last-quarter p95", "first partial p95", "lost", "dup", "errors",
                "refused", "WER", "held"):
        t.add_column(col, justify="right")
    for s in steps:
        r = s["report"]
        lat = r["latency_ms"]
        t.add_row(str(r["clients"]), _ms(lat["final"]["p50"]), _ms(lat["final"]["p95"]),
                  _ms(lat.get("final_last_quarter", {}).get("p95")), _ms(lat["first_partial"]["p95"]),
                  str(r["utterances"]["lost"]), str(r["utterances"]["duplicated"]), str(r["errors"]),
                  str(r.get("refused", 0)), "—" if r["wer"] is None else f"{100 * r['wer']:.1f} %", "yes" if s["held"] else "no")
    return t


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(table(report))


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Final latency over the run, one line per client."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for client, points in sorted(report["final_latency_series"].items(), key=lambda kv: int(kv[0])):
        if points:
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker=".", linewidth=1, label=f"client {client}")
    p95 = report["latency_ms"]["final"]["p95"]
    if p95 is not None:
        ax.axhline(p95, color="grey", linestyle="--", linewidth=1, label=f"p95 {p95:.0f} ms")
    ax.set_xlabel("time since start of run (s)")
    ax.set_ylabel("final latency (ms)")
    ax.set_title(f"Final latency, {report['clients']} client(s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if report["final_latency_series"]:
        ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""The load benchmark's tables and plots (``bench/load.py`` measures; this renders its rows)."""

from __future__ import annotations

from pathlib import Path

from bench.report import RESULTS


def table(rows: list[dict]) -> str:
    head = (
        "| N (rounds) | errors | lost turns | v2v p50 / p95 / p99 ms | barge-in→clear p50 / p95 ms | "
        "jitter p99 ms | underruns | loop lag p99 ms | server / client CPU % | RSS Δ MB (per call KB) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        v, b, j, lag = r["v2v_ms"], r["barge_in_ms"], r["jitter_ms"], r["loop_lag_ms"]
        lines.append(
            f"| {r['calls']} ({r.get('rounds', 1)}) | {r['errors']} | {r['lost_turns']}/{r['turns_sent']} | "
            f"{v['p50']} / {v['p95']} / {v['p99']} | {b['p50']} / {b['p95']} (missed {r['barges_missed']}) | "
            f"{j['p99']} | {r['underruns']} | {lag['p99_ms']} | "
            f"{r['server_cpu_pct']} / {r.get('client_cpu_pct', '–')} | "
            f"{r['rss_growth_mb']} ({r['rss_per_call_kb']}) |"
        )
    return "\n".join(lines)


def breakdown_table(rows: list[dict]) -> str:
    lines = [
        "| N | STT final p50 | LLM first token p50 | TTS first audio p50 | first frame sent p50 / p95 | "
        "replies started before the final | exposed: STT / LLM / TTS / send p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, x = r["server_breakdown_ms"], r["server_exposed_ms"]
        lines.append(
            f"| {r['calls']} | {b['stt_final']['p50']} | {b['llm_first_token']['p50']} | "
            f"{b['tts_first_audio']['p50']} | {b['first_frame']['p50']} / {b['first_frame']['p95']} | "
            f"{r['preempted_pct']}% | {x['endpointing+stt']['p50']} / {x['llm']['p50']} / "
            f"{x['tts']['p50']} / {x['send']['p50']} |"
        )
    return "\n".join(lines)


def plots(profile: str, rows: list[dict], stem: Path | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        xs = sorted(r["v2v_samples_ms"])
        if xs:
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=f"N={r['calls']}")
    ax.set_xlabel("voice-to-voice latency (ms)")
    ax.set_ylabel("fraction of turns")
    ax.set_title(f"Voice-to-voice CDF ({profile})")
    ax.grid(alpha=0.3)
    ax.legend()
    stem = stem or RESULTS / f"load_{profile}"
    path = stem.with_name(stem.name + "_v2v_cdf.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    made.append(path.name)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["calls"] for r in rows]
    ax.plot(ns, [r["jitter_ms"]["p99"] for r in rows], marker="o", label="pacing jitter p99")
    ax.plot(ns, [r["loop_lag_ms"]["p99_ms"] for r in rows], marker="s", label="event-loop lag p99")
    ax.axhline(20, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(50, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("ms")
    ax.set_title(f"Jitter and loop lag vs N ({profile})")
    ax.grid(alpha=0.3)
    ax.legend()
    path = stem.with_name(stem.name + "_jitter.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    made.append(path.name)
    plt.close(fig)
    return made


# ------------------------------------------------------------------ capacity curve

LIMITS = {"jitter_p99_ms": 20.0, "loop_lag_p99_ms": 50.0, "barge_in_p95_ms": 100.0}


def within_limits(r: dict) -> bool:
    barge = r["barge_in_ms"]["p95"]
    return (
        r["errors"] == 0
        and r["lost_turns"] == 0
        and r["barges_missed"] == 0
        and r["jitter_ms"]["p99"] <= LIMITS["jitter_p99_ms"]
        and r["loop_lag_ms"]["p99_ms"] <= LIMITS["loop_lag_p99_ms"]
        and barge == barge  # not NaN: the barge-ins were measured
        and barge <= LIMITS["barge_in_p95_ms"]
    )


def capacity_table(rows: list[dict]) -> str:
    lines = [
        "| calls | outbound jitter p50 / p99 ms | loop lag p99 ms | server CPU % | client CPU % | "
        "server RSS MB | server µs/msg | lost turns | barge-in→clear p95 ms | v2v p50 / p95 ms | "
        "load avg (1 min) | within limits |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        j, b, v = r["jitter_ms"], r["barge_in_ms"], r["v2v_ms"]
        lines.append(
            f"| {r['calls']} | {j['p50']} / {j['p99']} | {r['loop_lag_ms']['p99_ms']} | "
            f"{r['server_cpu_pct']} | {r['client_cpu_pct']} | {r['server_rss_mb']} | "
            f"{r.get('server_cpu_us_per_msg', '–')} | "
            f"{r['lost_turns']}/{r['turns_sent']} | {b['p95']} | {v['p50']} / {v['p95']} | "
            f"{r['load_avg_1m'][0]}→{r['load_avg_1m'][1]} | {'yes' if within_limits(r) else '**no**'} |"
        )
    return "\n".join(lines)


def capacity_plot(curves: dict[str, list[dict]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (label, rows), style in zip(curves.items(), ("-", "--", ":", "-."), strict=False):
        ns = [r["calls"] for r in rows]
        for key, marker, name in (
            (lambda r: r["jitter_ms"]["p99"], "o", "jitter p99"),
            (lambda r: r["loop_lag_ms"]["p99_ms"], "s", "loop lag p99"),
            (lambda r: r["barge_in_ms"]["p95"], "^", "barge-in→clear p95"),
        ):
            left.plot(ns, [key(r) for r in rows], marker=marker, linestyle=style, label=f"{name} ({label})")
        right.plot(
            ns,
            [r["server_cpu_pct"] for r in rows],
            marker="o",
            linestyle=style,
            label=f"server CPU ({label})",
        )
        right.plot(
            ns,
            [r["client_cpu_pct"] for r in rows],
            marker="s",
            linestyle=style,
            label=f"client CPU ({label})",
        )
    for limit, style in ((20, "--"), (50, ":"), (100, "-.")):
        left.axhline(limit, color="grey", linestyle=style, linewidth=0.8)
    left.set_yscale("log")
    left.set_ylim(bottom=1)
    left.set_xlabel("concurrent calls")
    left.set_ylabel("ms (limits: 20 / 50 / 100)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.axhline(200, color="grey", linestyle="--", linewidth=0.8)
    right.set_xlabel("concurrent calls")
    right.set_ylabel("% of one core (200 % = the machine)")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.suptitle("Capacity: overhead profile, load client on the same 2 cores")
    fig.tight_layout()
    path = RESULTS / "capacity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def capacity_section(label: str, rows: list[dict], meta: dict) -> str:
    within = [r["calls"] for r in rows if within_limits(r)]
    ceiling = max(within) if within else 0
    beyond = next((r for r in rows if r["calls"] > ceiling and not within_limits(r)), None)
    return (
        f"### {label}\n\nRun {meta['when']} with `{meta['command']}`. "
        f"Highest point within limits: **N = {ceiling}**"
        + (f"; first point beyond: N = {beyond['calls']}." if beyond else ".")
        + f"\n\n{capacity_table(rows)}\n"
    )

"""Output of a `quartz bench` run: the JSON, PNG plots (QPS vs recall, latency and QPS vs
concurrency) and the markdown tables docs/BENCHMARKS.md quotes."""

from __future__ import annotations

import time
from pathlib import Path

import orjson


def write(result: dict, out_dir: Path, stem: str | None = None) -> tuple[Path, list[Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"bench-{time.strftime('%Y%m%dT%H%M%S')}"
    path = out_dir / f"{stem}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path, plots(result, out_dir, stem)


def _measured(result: dict) -> list[dict]:
    return [s for s in result["systems"] if "skipped" not in s]


def plots(result: dict, out_dir: Path, stem: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # an optional extra: pip install 'quartz-cluster[bench]'
        return []
    systems = _measured(result)
    ds = result["dataset"]
    title = f"{ds['name']} ({ds['rows']:,} x {ds['dim']}), k=10"
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in systems:
        pts = sorted((v["recall_at_10"], v["qps"], ef) for ef, v in s["ef_sweep"].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s["system"])
        for r, q, ef in pts:
            ax.annotate(ef, (r, q), fontsize=6, textcoords="offset points", xytext=(2, 2))
    ax.axvline(result["parameters"]["recall_target"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("recall@10")
    ax.set_ylabel("QPS, one client (log)")
    ax.set_yscale("log")
    ax.set_title(f"QPS vs recall (ef sweep): {title}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / f"{stem}-qps-recall.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, s in enumerate(systems):
        color = f"C{i}"  # one colour per system in both panels
        levels = sorted(s["concurrency"].items(), key=lambda kv: int(kv[0]))
        x = [int(c) for c, _ in levels]
        a1.plot(x, [v["qps"] for _, v in levels], marker="o", color=color, label=s["system"])
        a2.plot(x, [v["p50_ms"] for _, v in levels], marker="o", color=color, label=f"{s['system']} p50")
        a2.plot(
            x,
            [v["p99_ms"] for _, v in levels],
            marker="x",
            linestyle="--",
            color=color,
            label=f"{s['system']} p99",
        )
    for a, label in ((a1, "QPS (log)"), (a2, "latency ms (log)")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("concurrent clients")
        a.set_ylabel(label)
        a.legend(fontsize=7)
    a1.set_title(f"QPS vs concurrency at recall >= target: {title}", fontsize=8)
    a2.set_title("latency vs concurrency", fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / f"{stem}-concurrency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the header, its rule, a line per row."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def tables(result: dict) -> str:
    systems = _measured(result)
    target = result["parameters"]["recall_target"]
    header = ["system", "ingest rows/s", "searchable after", "memory / vector / replica"]
    header += [
        f"ef at recall >= {target}",
        "recall@10",
        "ndcg@10",
        "p50 / p95 / p99 ms (1 client)",
        "batched QPS",
    ]
    rows = []
    for s in systems:
        op = s["ef_sweep"][str(s["operating_ef"])]
        rows.append(
            [
                s["system"],
                f"{s['ingest']['rows_per_s']:,.0f}",
                f"{s['ingest']['searchable_after_s']:.2f} s",
                f"{s['memory']['bytes_per_vector_per_replica']:,.0f} B",
                f"{s['operating_ef']}",
                f"{op['recall_at_10']:.3f}",
                f"{op['ndcg_at_10']:.3f}",
                f"{op['p50_ms']:.2f} / {op['p95_ms']:.2f} / {op['p99_ms']:.2f}",
                f"{s['batched_qps']:,.0f}",
            ]
        )
    lines = _table(header, rows)

    levels = sorted({int(c) for s in systems for c in s["concurrency"]})
    rows = []
    for s in systems:
        cells = []
        for c in levels:
            v = s["concurrency"].get(str(c))
            cells.append(f"{v['qps']:,.0f} ({v['p50_ms']:.1f} / {v['p99_ms']:.1f})" if v else "-")
        err = max(v["error_rate"] for v in s["concurrency"].values())
        rows.append([s["system"], *cells, f"{err:.1%}"])
    header = ["system", *(f"{c} clients: QPS (p50 / p99 ms)" for c in levels), "errors"]
    lines += ["", *_table(header, rows)]

    cpu = [s for s in systems if any("server_cpu_ms_per_query" in v for v in s["concurrency"].values())]
    if cpu:
        rows = []
        for s in cpu:
            cells = []
            for c in levels:
                v = s["concurrency"].get(str(c), {})
                srv, cli = v.get("server_cpu_ms_per_query"), v.get("client_cpu_ms_per_query")
                cells.append(
                    "-" if srv is None else f"{srv:.2f} / {cli:.2f}" if cli is not None else f"{srv:.2f}"
                )
            rows.append([s["system"], *cells])
        header = ["CPU ms per query: servers / client processes", *(f"{c} clients" for c in levels)]
        lines += ["", *_table(header, rows)]

    if any(s.get("filtered") for s in systems):
        filt = systems[0].get("filtered", [])
        header = ["system"]
        header += [f"{f['key']}={f['value']} ({f['selectivity']:.1%}): recall / p50 ms" for f in filt]
        rows = [
            [s["system"], *(f"{f['recall_at_10']:.3f} / {f['p50_ms']:.2f}" for f in s.get("filtered", []))]
            for s in systems
        ]
        lines += ["", *_table(header, rows)]
    skipped = [s for s in result["systems"] if "skipped" in s]
    for s in skipped:
        lines.append(f"\n{s['system']}: skipped ({s['skipped']})")
    return "\n".join(lines)

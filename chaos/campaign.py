"""Run every chaos scenario several times and tabulate the results.

    .venv/bin/python chaos/campaign.py --runs 20 --duration 60          # the full campaign
    .venv/bin/python chaos/campaign.py --runs 3 --duration 20 --scenarios kill-primary,mixed
    .venv/bin/python chaos/campaign.py --tabulate chaos/results/campaign-*.json   # one table over runs

Writes chaos/results/campaign-<time>.json and prints a markdown table (docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.common import run_info
from quartz_cluster.chaos.faults import SCENARIOS
from quartz_cluster.chaos.runner import ChaosConfig, run


def table(rows: list[dict]) -> str:
    """The markdown table of docs/RELIABILITY.md, one line per scenario."""
    out = [
        "| scenario | runs | passed | lost | unexpected | duplicated | stale strong reads "
        "| acknowledged writes | failed calls (write / read) | write recovery after a fault, median (max) "
        "| longest write outage, median (max) | failovers + handovers "
        "| replication factor restored, median (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in sorted({r["scenario"] for r in rows}):
        rs = [r for r in rows if r["scenario"] == scenario]
        rec = [x for r in rs for x in r["recovery_s"]]
        gaps = [x for r in rs for x in r.get("write_outage_s", [])]
        stale = [r["stale"] for r in rs if "stale" in r]
        counted = [r["epoch_bumps"] for r in rs if r.get("epoch_bumps") is not None]
        bumps = sum(counted) if counted else "-"
        restored = [r["replication_restored_after_s"] for r in rs if r.get("replication_restored_after_s")]

        def spread(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f} s ({max(xs):.2f} s)" if xs else "-"

        out.append(
            f"| {scenario} | {len(rs)} | {sum(r['passed'] for r in rs)} | {sum(r['lost'] for r in rs)} | "
            f"{sum(r['unexpected'] for r in rs)} | {sum(r['duplicated'] for r in rs)} | "
            f"{sum(stale) if stale else 'not checked'} | {sum(r['acknowledged'] for r in rs):,} | "
            f"{sum(r['failed_write_calls'] for r in rs)} / {sum(r['failed_read_calls'] for r in rs)} | "
            f"{spread(rec)} | {spread(gaps)} | {bumps} | {spread(restored)} |"
        )
    return "\n".join(out)


def tabulate(paths: list[str]) -> int:
    """One table over several campaign files (runs of different seeds, or commits)."""
    rows = [row for p in paths for row in orjson.loads(Path(p).read_bytes())["rows"]]
    print(table(rows))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1, help="seeds first-seed .. first-seed + runs - 1")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--scenarios", default=",".join(sorted(SCENARIOS)))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--tabulate", nargs="+", metavar="CAMPAIGN_JSON", help="print one table over these files")
    args = ap.parse_args()
    if args.tabulate:
        return tabulate(args.tabulate)
    out = Path(args.out)
    work = out / "runs"
    rows = []
    path = out / f"campaign-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.mkdir(parents=True, exist_ok=True)
    for scenario in args.scenarios.split(","):
        for seed in range(args.first_seed, args.first_seed + args.runs):
            r = run(
                ChaosConfig(scenario, args.duration, seed, out_dir=str(work / f"{scenario}-{seed}")),
                say=lambda _: None,
            )
            rec = [f["recovered_after_s"] for f in r["recovery"] if f["recovered_after_s"] is not None]
            rows.append(
                {
                    "scenario": scenario,
                    "seed": seed,
                    "passed": r["passed"],
                    "lost": len(r["lost"]),
                    "unexpected": len(r["unexpected"]),
                    "duplicated": len(r["duplicated"]),
                    "acknowledged": r["acknowledged"],
                    "recovered": r["recovered"],
                    "failed_write_calls": r["writes"]["failed"],
                    "failed_read_calls": r["reads"]["failed"],
                    "faults": len(r["recovery"]),
                    "recovery_s": rec,
                    "stale": len(r["stale"]),
                    "write_outage_s": [f["write_outage_s"] for f in r["recovery"]],
                    "converged_after_s": r["converged_after_s"],
                    "recall_at_10_after": r["recall_at_10_after"],
                    "epoch_bumps": r.get("epoch_bumps"),
                    "replication_restored_after_s": r.get("replication_restored_after_s"),
                    "heavy_load": r.get("heavy_load", []),
                }
            )
            print(f"{scenario} seed {seed}: {'PASS' if r['passed'] else 'FAIL'}", flush=True)
            if r["passed"]:  # a passing run keeps its report, history and timeline, not its data
                shutil.rmtree(work / f"{scenario}-{seed}" / "cluster", ignore_errors=True)
            # written after every run: a campaign stopped half-way keeps what it measured
            result = {"runs_per_scenario": args.runs, "duration_s": args.duration, **run_info(), "rows": rows}
            path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print()
    print(table(rows))
    print(f"\nwrote {path}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

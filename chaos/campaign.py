"""Run every chaos scenario several times and tabulate the results.

    .venv/bin/python chaos/campaign.py --runs 20 --duration 60          # the full campaign
    .venv/bin/python chaos/campaign.py --runs 3 --duration 20 --scenarios kill-primary,mixed

Writes chaos/results/campaign-<time>.json and prints a markdown table (docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.common import run_info
from quartz_cluster.chaos.faults import SCENARIOS
from quartz_cluster.chaos.runner import ChaosConfig, run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1, help="seeds first-seed .. first-seed + runs - 1")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--scenarios", default=",".join(sorted(SCENARIOS)))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
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
                    "converged_after_s": r["converged_after_s"],
                    "recall_at_10_after": r["recall_at_10_after"],
                }
            )
            print(f"{scenario} seed {seed}: {'PASS' if r['passed'] else 'FAIL'}", flush=True)
            # written after every run: a campaign stopped half-way keeps what it measured
            result = {"runs_per_scenario": args.runs, "duration_s": args.duration, **run_info(), "rows": rows}
            path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(
        "\n| scenario | runs | passed | lost | unexpected | duplicated | acknowledged writes | failed calls "
        "(write / read) | write recovery after a fault, median (max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario in args.scenarios.split(","):
        rs = [r for r in rows if r["scenario"] == scenario]
        rec = [x for r in rs for x in r["recovery_s"]]
        print(
            f"| {scenario} | {len(rs)} | {sum(r['passed'] for r in rs)} | {sum(r['lost'] for r in rs)} | "
            f"{sum(r['unexpected'] for r in rs)} | {sum(r['duplicated'] for r in rs)} | "
            f"{sum(r['acknowledged'] for r in rs):,} | {sum(r['failed_write_calls'] for r in rs)} / "
            f"{sum(r['failed_read_calls'] for r in rs)} | "
            f"{statistics.median(rec):.2f} s ({max(rec):.2f} s) |"
            if rec
            else "| - |"
        )
    print(f"\nwrote {path}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# Mutation testing of the pure core against the unit suite (mutmut; docs/mutation.md).
#
#   bash scripts/mutation.sh                                   # every module in [tool.mutmut] only_mutate
#   bash scripts/mutation.sh quartz_cluster/validation.py ...  # some of them
#
# Run after scripts/setup.sh. Each run starts from an empty mutants/ (mutmut's copy of the
# package, rebuilt in seconds) and re-runs every mutant of the modules named, so a score never
# mixes results from older tests. One worker by default (MUTMUT_CHILDREN=N for more).
# The score leaves out the mutants listed as equivalent in docs/mutation.md (lines
# "- `quartz_cluster.<module>.x_<function>__mutmut_<n>`: reason"), and exits 1 when it is below
# MUTATION_MIN percent (default 85). To add a module: append it to only_mutate in pyproject.toml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=.venv/bin/python
[ -x .venv/bin/mutmut ] || {
  echo "mutation: .venv/bin/mutmut missing; run scripts/setup.sh (mutmut is in the dev extra)" >&2
  exit 2
}

# The module list: the arguments, each of which must be configured, or the whole configuration.
mapfile -t modules < <("$py" - "$@" <<'EOF'
import fnmatch
import sys
import tomllib

configured = tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"]
wanted = sys.argv[1:] or configured
for path in wanted:
    if not any(fnmatch.fnmatch(path, pattern) for pattern in configured):
        sys.exit(f"mutation: {path} is not in [tool.mutmut] only_mutate of pyproject.toml")
    print(path)
EOF
)
globs=()
for m in "${modules[@]}"; do
  dotted=${m%.py}
  globs+=("${dotted//\//.}.*")
done

rm -rf mutants
start=$(date +%s)
log=$(mktemp)
# mutmut forks its test runs from this process, so a Hypothesis profile loaded here applies to
# them: no shrinking (a failing example kills the mutant as it is; shrinking it took minutes and
# ran into mutmut's timeout) and derandomized, so that two runs give the same score.
run_mutmut='
import sys
from hypothesis import Phase, settings
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True)
settings.load_profile("mutation")
from mutmut.__main__ import cli
sys.argv[0] = "mutmut"
cli()
'
if ! "$py" -c "$run_mutmut" run --max-children "${MUTMUT_CHILDREN:-1}" "${globs[@]}" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "mutation: mutmut failed (full output: $log)" >&2
  exit 2
fi
echo "mutation: mutmut ran ${#modules[@]} module(s) in $(($(date +%s) - start)) s (output: $log)"

"$py" - "${MUTATION_MIN:-85}" "${modules[@]}" <<'EOF'
import json
import re
import sys
from pathlib import Path

minimum, modules = float(sys.argv[1]), sys.argv[2:]
doc = Path("docs/mutation.md")
equivalent = set(re.findall(r"^- `(quartz_cluster\.[\w.]+__mutmut_\d+)`", doc.read_text(), re.M)) if doc.exists() else set()
# mutmut's exit codes: 1 and 3 killed; timeouts and crashes count as killed (the mutant broke
# the code); 0 survived; 33 / 5 no test reached the function (counts as survived).
KILLED = {1, 3, 36, 24, -24, 152, 255, -11, -9}
NO_TESTS = {5, 33}
rows, survivors, totals = [], [], [0, 0, 0]
for module in modules:
    meta = Path("mutants") / (module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    killed = survived = eq = 0
    for name, code in sorted(codes.items(), key=lambda kv: (kv[0].rsplit("_", 1)[0], int(kv[0].rsplit("_", 1)[1]))):
        if name in equivalent:
            eq += 1
        elif code in KILLED:
            killed += 1
        elif code == 0 or code in NO_TESTS:
            survived += 1
            survivors.append(f"{name}{' (no test reaches it)' if code in NO_TESTS else ''}")
        else:
            sys.exit(f"mutation: {name} has exit code {code} (not run?)")
    score = 100.0 * killed / max(killed + survived, 1)
    rows.append((module, killed, survived, eq, score))
    totals[0] += killed
    totals[1] += survived
    totals[2] += eq
print()
print(f"{'module':48} {'killed':>7} {'survived':>9} {'equiv.':>7} {'score':>7}")
for module, killed, survived, eq, score in rows:
    print(f"{module:48} {killed:7d} {survived:9d} {eq:7d} {score:6.1f}%")
overall = 100.0 * totals[0] / max(totals[0] + totals[1], 1)
print(f"{'overall':48} {totals[0]:7d} {totals[1]:9d} {totals[2]:7d} {overall:6.1f}%")
if survivors:
    print("\nsurviving (see one with: .venv/bin/mutmut show NAME):")
    print("\n".join(f"  {s}" for s in survivors))
if overall < minimum:
    print(f"\nmutation: score {overall:.1f}% is below {minimum:g}%")
    sys.exit(1)
EOF

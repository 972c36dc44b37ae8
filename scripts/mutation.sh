#!/usr/bin/env bash
# Mutation testing of the pure core against the unit suite (mutmut; docs/mutation.md).
#
#   bash scripts/mutation.sh                                   # every module in [tool.mutmut] only_mutate
#   bash scripts/mutation.sh quartz_cluster/validation.py ...  # some of them
#
# Run after scripts/setup.sh. Each run starts from an empty mutants/ (mutmut's copy of the
# package, rebuilt in seconds) and re-runs every mutant of the modules named, so a score never
# mixes results from older tests. One worker by default (MUTMUT_CHILDREN=N for more). Mutants
# that mutmut reports as timed out or crashed are run again in a fresh process (a loaded machine
# makes mutmut's wall-clock limit fire on a mutant that only ran slowly).
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
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

minimum, modules = float(sys.argv[1]), sys.argv[2:]
doc = Path("docs/mutation.md")
equivalent = set(re.findall(r"^- `(quartz_cluster\.\S+__mutmut_\d+)`", doc.read_text(), re.M)) if doc.exists() else set()
# mutmut's exit codes: 1 and 3 killed; 0 survived; 33 and 5: no test reaches the function
# (counts as survived). Anything else is a timeout or a crash, which mutmut's workers also report
# for a test run that was only slow (a loaded machine: mutmut also limits wall-clock time) or
# that hung after the fork: each of those is run again here in a fresh process, and counts as
# killed only if its tests fail or use 30x the CPU time they took unmutated.
KILLED, NO_TESTS = {1, 3}, {5, 33}
stats = json.loads(Path("mutants/mutmut-stats.json").read_text())
tests_by, durations = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
RUNNER = """
import sys
from hypothesis import Phase, settings
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True)
settings.load_profile("mutation")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def recheck(name: str) -> bool:
    """Run the mutant's tests once more; True if they fail (killed)."""
    tests = sorted(tests_by.get(name.rsplit("__mutmut_", 1)[0], ()))
    cpu_s = int(30 * (sum(durations.get(t, 0.0) for t in tests) + 1)) + 1
    env = {**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONPATH": str(Path("mutants").resolve())}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd="mutants",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
    )
    try:
        code = proc.wait(timeout=max(900, 10 * cpu_s))  # only a hang that burns no CPU gets here
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    if code not in (0, 1, 3) and code >= 0:
        sys.exit(f"mutation: re-running {name}'s tests failed (pytest exit code {code})")
    return code != 0


rows, survivors, stale, totals, rechecked = [], [], [], [0, 0, 0], [0, 0]
for module in modules:
    meta = Path("mutants") / (module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    killed = survived = eq = 0
    for name, code in sorted(codes.items(), key=lambda kv: (kv[0].rsplit("_", 1)[0], int(kv[0].rsplit("_", 1)[1]))):
        if code is None:
            sys.exit(f"mutation: {name} was not run")
        if code not in KILLED | NO_TESTS | {0}:
            rechecked[0] += 1
            code = 1 if recheck(name) else 0
            rechecked[1] += code == 0
        if name in equivalent:
            eq += 1
            if code in KILLED:
                stale.append(name)
        elif code in KILLED:
            killed += 1
        else:
            survived += 1
            survivors.append(f"{name}{' (no test reaches it)' if code in NO_TESTS else ''}")
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
print("score = killed / (killed + survived); the equivalent mutants of docs/mutation.md are left out")
if rechecked[0]:
    print(f"{rechecked[0]} timed-out or crashed mutant(s) re-run in a fresh process: {rechecked[1]} survived")
if stale:
    print("\nlisted as equivalent in docs/mutation.md but killed (a stale entry: the code changed?):")
    print("\n".join(f"  {s}" for s in stale))
if survivors:
    print("\nsurviving (see one with: .venv/bin/mutmut show NAME):")
    print("\n".join(f"  {s}" for s in survivors))
if overall < minimum:
    print(f"\nmutation: score {overall:.1f}% is below {minimum:g}%")
    sys.exit(1)
EOF

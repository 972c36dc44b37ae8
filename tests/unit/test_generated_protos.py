"""The committed generated code must be what scripts/gen_protos.sh produces from protos/."""

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path):
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen_protos.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    fresh = sorted(p.name for p in (tmp_path / "quartz/v1").iterdir())
    committed_dir = ROOT / "quartz_cluster/proto/quartz/v1"
    committed = sorted(p.name for p in committed_dir.iterdir() if p.suffix in (".py", ".pyi"))
    assert fresh == committed
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "quartz/v1", committed_dir, fresh, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code: {mismatch + errors}; run scripts/gen_protos.sh"
    )

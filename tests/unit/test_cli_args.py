"""New CLI entry points refuse bad arguments with a message naming the flag, before starting anything."""

from __future__ import annotations

import pytest

from quartz_cluster.cli import main


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["bench", "--systems", "hnswlib,nosuch"], "--systems"),
        (["bench", "--concurrency", "1,x"], "--concurrency"),
        (["bench", "--ef-sweep", "0"], "--ef-sweep"),
    ],
)
def test_bench_refuses_bad_arguments(argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert str(exc.value).startswith(flag)


def test_node_refuses_a_bad_advertise_address(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["node", "--id", "n1", "--data-dir", str(tmp_path / "n1"), "--advertise", "no-port"])
    assert exc.value.code == 2 and "--advertise" in capsys.readouterr().err
    assert not (tmp_path / "n1").exists()  # nothing was started or written

"""`quartz load`'s checks before the first write (loader.py): each bad input is one LoadError
naming the file and the row or line (they were tracebacks). No network: the files are checked
before the router is contacted."""

import numpy as np
import pytest

from quartz_cluster import cli
from quartz_cluster.auth import keys
from quartz_cluster.loader import LoadError, check_payloads, load_file, open_vectors


def npy(tmp_path, arr, name="v.npy"):
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


def text_file(path):
    path.write_text("hello\n")
    return str(path)


def test_a_good_file_is_opened_and_limited(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert open_vectors(npy(tmp_path, arr), None).tolist() == arr.tolist()
    assert open_vectors(npy(tmp_path, arr), 2).shape == (2, 3)
    assert open_vectors(npy(tmp_path, arr), 99).shape == (4, 3)
    assert open_vectors(npy(tmp_path, arr.astype(np.int32)), None).shape == (4, 3)  # integers are numbers


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "missing.npy"), r"missing\.npy: no such file"),
        (
            lambda d: text_file(d / "t.npy"),
            r"t\.npy: not a \.npy array file",
        ),
        (lambda d: npy(d, np.ones(5, np.float32)), r"must hold a non-empty 2-D array .* shape \(5,\)"),
        (lambda d: npy(d, np.ones((0, 4), np.float32)), r"non-empty 2-D array"),
        (lambda d: npy(d, np.array([["a", "b"]])), r"must hold numbers, got dtype <U1"),
    ],
)
def test_bad_vector_files_are_named(tmp_path, make, message):
    with pytest.raises(LoadError, match=message):
        open_vectors(make(tmp_path), None)


def test_the_first_non_finite_row_is_named_even_past_the_first_check_slice(tmp_path, monkeypatch):
    monkeypatch.setattr("quartz_cluster.loader.CHECK_ROWS", 4)
    arr = np.ones((10, 3), np.float32)
    arr[6, 2] = np.nan
    arr[8, 0] = np.inf
    with pytest.raises(LoadError, match=r"row 6 holds NaN or infinity"):
        open_vectors(npy(tmp_path, arr), None)
    assert open_vectors(npy(tmp_path, arr), 6).shape == (6, 3)  # the bad rows are past the limit


def test_payload_files_are_checked_line_by_line(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"id": "a"}\n{"id": "b"}\n{"extra": 1}\n')
    check_payloads(str(good), 2)
    check_payloads(str(good), 3)
    with pytest.raises(LoadError, match=r"p\.jsonl: has 3 lines for 4 vectors"):
        check_payloads(str(good), 4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(LoadError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        check_payloads(str(bad), 2)
    arr = tmp_path / "arr.jsonl"
    arr.write_text("[1, 2]\n")
    with pytest.raises(LoadError, match=r"line 1 must be a JSON object, got list"):
        check_payloads(str(arr), 1)
    with pytest.raises(LoadError, match=r"nope\.jsonl: no such file"):
        check_payloads(str(tmp_path / "nope.jsonl"), 1)


def test_files_are_checked_before_the_router_is_contacted(tmp_path):
    # the router address is unreachable: the file error must come first, and nothing hangs
    key = keys.new_key()[2]  # a well-formed key the router would have to check
    with pytest.raises(LoadError, match=r"no such file"):
        load_file("127.0.0.1:1", key, str(tmp_path / "none.npy"), "c")
    vecs = npy(tmp_path, np.ones((3, 2), np.float32))
    short = tmp_path / "short.jsonl"
    short.write_text("{}\n")
    with pytest.raises(LoadError, match=r"has 1 lines for 3 vectors"):
        load_file("127.0.0.1:1", key, vecs, "c", payloads=str(short))
    with pytest.raises(LoadError, match=r"--batch must be at least 1"):
        load_file("127.0.0.1:1", key, vecs, "c", batch=0)


def test_the_cli_prints_one_error_line_and_exits_1(tmp_path, capsys):
    assert cli.main(["load", "--router", "127.0.0.1:1", str(tmp_path / "x.npy"), "--collection", "c"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip().startswith("quartz ")
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["load"].format_help()
    assert "default: id" in " ".join(help_text.split())

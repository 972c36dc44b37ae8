"""LocalCluster.supervise: a child that died is restarted after a backoff that doubles while it
keeps dying; one that stays up long enough has its backoff reset. The children are stand-ins
(no process is started)."""

from quartz_cluster import cluster as cluster_mod
from quartz_cluster.cluster import LocalCluster


class Child:
    role = "node"

    def __init__(self, name: str) -> None:
        self.name, self.up, self.starts, self.fail_start = name, True, 0, False
        self.proc = type("P", (), {"returncode": -9})()
        self.pid = 100

    def alive(self) -> bool:
        return self.up

    def start(self):
        self.starts += 1
        if self.fail_start:
            raise RuntimeError("no luck\nmore lines")
        self.up = True
        self.pid += 1
        return self


def cluster(tmp_path, *children) -> LocalCluster:
    c = LocalCluster(tmp_path / "c")
    c.nodes = list(children)
    c.write_info = lambda: None
    return c


def test_a_dead_child_is_restarted_after_its_backoff_which_doubles(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_mod.time, "monotonic", lambda: clock[0])
    clock = [0.0]
    n1, n2 = Child("n1"), Child("n2")
    c = cluster(tmp_path, n1, n2)
    assert c.supervise(0.0) == []
    n1.up = False
    assert c.supervise(1.0) == ["node n1 exited (code -9); restart in 1 s"]
    assert c.supervise(1.5) == [] and n1.starts == 0  # the backoff has not passed
    clock[0] = 2.0
    assert c.supervise(2.0) == ["node n1 restarted (pid 101, restart 1)"] and n1.up
    n1.up = False  # dies again at once: the next wait is 2 s
    assert c.supervise(3.0) == ["node n1 exited (code -9); restart in 2 s"]
    assert c.supervise(4.9) == []
    clock[0] = 5.0
    assert c.supervise(5.0) == ["node n1 restarted (pid 102, restart 2)"]
    assert n2.starts == 0  # the healthy one was left alone


def test_a_child_up_long_enough_starts_again_from_the_first_backoff(tmp_path, monkeypatch):
    clock = [10.0]
    monkeypatch.setattr(cluster_mod.time, "monotonic", lambda: clock[0])
    n1 = Child("n1")
    c = cluster(tmp_path, n1)
    c.supervise(0.0)
    for at in (1.0, 3.0, 7.0):  # three quick deaths: 1 s, 2 s, 4 s
        n1.up = False
        c.supervise(at)
        clock[0] = at + 100
        c.supervise(at + 100)
    assert n1.starts == 3
    c.supervise(clock[0] + cluster_mod.RESTART_STABLE_S)  # stable for a while: reset
    n1.up = False
    assert c.supervise(clock[0] + cluster_mod.RESTART_STABLE_S + 1) == [
        "node n1 exited (code -9); restart in 1 s"
    ]


def test_a_failed_restart_is_reported_in_one_line_and_tried_again_later(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_mod.time, "monotonic", lambda: 50.0)
    n1 = Child("n1")
    n1.fail_start = True
    c = cluster(tmp_path, n1)
    n1.up = False
    c.supervise(0.0)
    assert c.supervise(2.0) == ["node n1 did not restart: no luck"]
    assert c.supervise(3.0) == ["node n1 exited (code -9); restart in 2 s"]

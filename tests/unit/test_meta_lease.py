"""meta/lease.py without etcd: the validity window that fences writes and strong reads, and the
keeper's grant / refresh / re-register / revoke cycle against a fake store."""

import threading
from types import SimpleNamespace

from quartz_cluster.meta import lease as lease_mod
from quartz_cluster.meta.lease import DEFAULT_TTL_S, SAFETY_MARGIN_S, LeaseKeeper
from quartz_cluster.meta.store import EtcdAuth


def test_valid_until_is_the_acknowledged_send_time_plus_ttl_minus_the_margin():
    k = LeaseKeeper("h:1", b"/quartz/nodes/n1", lambda: b"v", ttl_s=3)
    k._acked_sent_at = 100.0
    assert k.valid_until() == 100.0 + 3 - SAFETY_MARGIN_S
    assert DEFAULT_TTL_S == 3 and SAFETY_MARGIN_S == 0.5


def test_alive_needs_a_lease_and_a_clock_before_valid_until(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(lease_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    k = LeaseKeeper("h:1", b"k", lambda: b"v", ttl_s=3)
    k._acked_sent_at = 999.0  # valid until 1001.5
    assert not k.alive()  # no lease granted yet
    k.lease_id = 7
    assert k.alive()
    now[0] = 1001.4999
    assert k.alive()
    now[0] = 1001.5  # exactly at valid_until: no longer
    assert not k.alive()


class FakeLease:
    def __init__(self, lease_id, ttls):
        self.id, self.ttls, self.revoked = lease_id, ttls, False

    async def refresh(self):
        ttl = self.ttls.pop(0) if self.ttls else 3
        return SimpleNamespace(TTL=ttl)

    async def revoke(self):
        self.revoked = True


class FakeStore:
    """EtcdStore's calls the keeper makes. The first lease expires at its first refresh."""

    instances: list["FakeStore"] = []

    def __init__(self, endpoints, auth=None):
        self.endpoints, self.auth = endpoints, auth
        self.leases, self.puts, self.closed = [], [], False
        self.changed_value_put = threading.Event()
        FakeStore.instances.append(self)

    async def client(self):
        return self

    async def lease(self, ttl):
        lease = FakeLease(len(self.leases) + 1, [0] if not self.leases else [])
        self.leases.append(lease)
        return lease

    async def put(self, key, value, lease=None):
        self.puts.append((key, value, lease.id))
        if value == b"v2":
            self.changed_value_put.set()

    async def reset(self):
        pass

    async def close(self):
        self.closed = True


def test_keeper_registers_re_registers_an_expired_lease_and_revokes_on_stop(monkeypatch):
    FakeStore.instances = []
    monkeypatch.setattr(lease_mod, "EtcdStore", FakeStore)
    values = iter([b"v1", b"v1", b"v2"])  # at grant 1, grant 2, then after a refresh of lease 2
    last = [b"v1"]

    def value():
        last[0] = next(values, last[0])
        return last[0]

    auth = EtcdAuth("quartz-node", "pw")
    k = LeaseKeeper("h:1", b"/quartz/nodes/n1", value, ttl_s=1, auth=auth)
    k.start()
    assert k.granted.wait(10)
    [store] = FakeStore.instances
    assert (store.endpoints, store.auth) == ("h:1", auth)  # the keeper's store logs in to etcd
    # lease 1 expires at its first refresh: lease 2 is granted; after its first refresh the value
    # has changed and is put again
    assert store.changed_value_put.wait(10)
    k.stop(revoke=True)
    assert not k.is_alive()
    assert k.grants == 2 and k.lease_id == 2
    first, second = store.leases
    assert second.revoked and not first.revoked  # the expired one is not revoked, the live one is
    assert store.closed
    key = b"/quartz/nodes/n1"
    assert store.puts == [(key, b"v1", 1), (key, b"v1", 2), (key, b"v2", 2)]  # unchanged: not put


def test_stop_without_revoke_leaves_the_lease(monkeypatch):
    FakeStore.instances = []
    monkeypatch.setattr(lease_mod, "EtcdStore", FakeStore)
    k = LeaseKeeper("h:1", b"k", lambda: b"v", ttl_s=1)
    k.start()
    assert k.granted.wait(10)
    k.stop(revoke=False)
    assert not k.is_alive()
    assert FakeStore.instances[0].auth is None  # no auth given: none sent
    assert not any(lease.revoked for lease in FakeStore.instances[0].leases)


def test_a_stopped_state_is_read_after_the_command_name_even_with_spaces_and_parentheses():
    from quartz_cluster.meta.lease_process import stopped_state

    assert stopped_state(b"123 (python3) T 1 123 123 0 -1")
    assert stopped_state(b"123 (a) b (c)) t 1 2")
    assert not stopped_state(b"123 (a T b) S 1 123")
    assert not stopped_state(b"123 (python3) R 1")
    assert not stopped_state(b"")


def test_the_owner_must_run_and_have_beaten_recently_for_the_lease_to_be_kept():
    from quartz_cluster.meta.lease_process import OWNER_SILENT_S_MAX, owner_can_work

    assert owner_can_work(100.0, 99.0, stopped=False)
    assert not owner_can_work(100.0, 99.0, stopped=True)
    assert not owner_can_work(100.0 + OWNER_SILENT_S_MAX, 100.0, stopped=False)
    assert owner_can_work(100.0 + OWNER_SILENT_S_MAX - 0.01, 100.0, stopped=False)


def test_a_keeper_that_may_not_refresh_neither_registers_nor_refreshes(monkeypatch):
    FakeStore.instances = []
    monkeypatch.setattr(lease_mod, "EtcdStore", FakeStore)
    allowed = threading.Event()

    class Gated(LeaseKeeper):
        def may_refresh(self) -> bool:
            return allowed.is_set()

    published = []
    k = Gated("h:1", b"k", lambda: b"v", ttl_s=1)
    k.published = lambda: published.append((k.lease_id, k.grants))
    k.start()
    assert not k.granted.wait(1.0)  # held back: nothing registered
    assert FakeStore.instances[0].leases == []
    allowed.set()
    assert k.granted.wait(10)
    k.stop(revoke=True)
    assert published[0] == (1, 1)  # the grant is published with its id

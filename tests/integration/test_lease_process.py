"""A node's lease kept by a child process (meta/lease_process.py, ADR 18), against a real etcd:
a GIL held past the TTL does not lose it (a keepalive thread does), a SIGSTOPped owner lets it
lapse and takes it again when continued, a SIGKILLed owner's lease is revoked at once."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys

from quartz_cluster.meta.lease import LeaseKeeper
from quartz_cluster.meta.lease_process import LeaseProcess
from quartz_cluster.meta.store import EtcdStore
from tests.integration.conftest import wait_for

GIL_HOLD_S = 5.0  # more than twice the TTL below
TTL_S = 2
LONG_TTL_S = 120  # a key under this lease vanishes within the test only if it is revoked
WAIT_S = 60.0


def lease_of(endpoint: str, key: bytes) -> int | None:
    async def get():
        store = EtcdStore(endpoint)
        try:
            kv = await store.get(key)
            return kv.lease if kv is not None else None
        finally:
            await store.close()

    return asyncio.run(get())


def hold_the_gil(seconds: float) -> None:
    """A C call that keeps the GIL (PyDLL does not release it), as a huge protobuf encode does."""
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))


def test_a_gil_stall_past_the_ttl_keeps_a_process_lease_but_loses_a_thread_lease(etcd):
    proc_keeper = LeaseProcess(etcd.endpoint, b"/t/proc", lambda: b"p", ttl_s=TTL_S)
    thread_keeper = LeaseKeeper(etcd.endpoint, b"/t/thread", lambda: b"t", ttl_s=TTL_S)
    proc_keeper.start()
    thread_keeper.start()
    try:
        assert proc_keeper.granted.wait(WAIT_S) and thread_keeper.granted.wait(WAIT_S)
        first = proc_keeper.lease_id
        assert first is not None and lease_of(etcd.endpoint, b"/t/proc") == first
        hold_the_gil(GIL_HOLD_S)
        assert proc_keeper.alive()  # refreshed meanwhile: the fence still admits writes
        assert proc_keeper.grants == 1 and proc_keeper.lease_id == first
        assert lease_of(etcd.endpoint, b"/t/proc") == first
        # the thread could not refresh for GIL_HOLD_S > TTL: its lease expired and is re-granted
        wait_for(lambda: thread_keeper.grants >= 2, "the thread keeper re-registers")
    finally:
        proc_keeper.stop(revoke=True)
        thread_keeper.stop(revoke=True)
    assert lease_of(etcd.endpoint, b"/t/proc") is None  # stop revoked it
    assert proc_keeper.proc is not None and proc_keeper.proc.returncode == 0


OWNER = """
import sys, time
from quartz_cluster.meta.lease_process import LeaseProcess
k = LeaseProcess(sys.argv[1], sys.argv[2].encode(), lambda: b"owner", ttl_s=int(sys.argv[3]))
k.start()
assert k.granted.wait(60)
print(k.proc.pid, flush=True)
while True:
    time.sleep(1)
"""


def start_owner(endpoint: str, key: bytes, ttl_s: int) -> tuple[subprocess.Popen, int]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, endpoint, key.decode(), str(ttl_s)], stdout=subprocess.PIPE, text=True
    )
    child = int(owner.stdout.readline())
    return owner, child


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_stopped_owner_lets_the_lease_lapse_and_a_killed_one_has_it_revoked(etcd):
    owner, child = start_owner(etcd.endpoint, b"/t/stopped", TTL_S)
    try:
        first = lease_of(etcd.endpoint, b"/t/stopped")
        assert first is not None
        os.kill(owner.pid, signal.SIGSTOP)
        wait_for(lambda: lease_of(etcd.endpoint, b"/t/stopped") is None, "a stopped owner's lease lapses")
        os.kill(owner.pid, signal.SIGCONT)
        wait_for(
            lambda: lease_of(etcd.endpoint, b"/t/stopped") not in (None, first),
            "a continued owner registers again under a new lease",
        )
    finally:
        owner.kill()
        owner.wait()
    wait_for(lambda: gone(child), "the keeper process exits with its owner")

    owner, child = start_owner(etcd.endpoint, b"/t/killed", LONG_TTL_S)
    try:
        assert lease_of(etcd.endpoint, b"/t/killed") is not None
    finally:
        owner.kill()
        owner.wait()
    # a lease of LONG_TTL_S disappears within WAIT_S only by being revoked
    wait_for(lambda: lease_of(etcd.endpoint, b"/t/killed") is None, "a killed owner's lease is revoked")
    wait_for(lambda: gone(child), "the keeper process exits with its owner")


def test_a_killed_keeper_process_is_replaced_and_the_key_is_held_again(etcd):
    keeper = LeaseProcess(etcd.endpoint, b"/t/respawn", lambda: b"v", ttl_s=TTL_S)
    keeper.start()
    try:
        assert keeper.granted.wait(WAIT_S)
        first_child, first_lease = keeper.proc.pid, keeper.lease_id
        os.kill(first_child, signal.SIGKILL)
        wait_for(lambda: keeper.proc.pid != first_child, "another keeper process starts")
        wait_for(lambda: keeper.grants == 2 and keeper.alive(), "the new process holds a new lease")
        assert keeper.lease_id not in (None, first_lease)
        wait_for(lambda: lease_of(etcd.endpoint, b"/t/respawn") == keeper.lease_id, "the key is under it")
    finally:
        keeper.stop(revoke=True)
    assert lease_of(etcd.endpoint, b"/t/respawn") is None

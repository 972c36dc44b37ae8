"""meta/store.py without etcd: endpoint parsing, failing over between endpoints, the KV
conversions, and the list-then-watch loop of `follow` against a fake aetcd client."""

import asyncio
from types import SimpleNamespace

import pytest

from quartz_cluster.meta import store as store_mod
from quartz_cluster.meta.store import KV, ROOT_SENTINEL, EtcdAuth, EtcdStore, parse_endpoints


def test_parse_endpoints():
    assert parse_endpoints("a:1,b:2") == [("a", 1), ("b", 2)]
    assert parse_endpoints(" http://h:2379 , 10.0.0.1:2380") == [("h", 2379), ("10.0.0.1", 2380)]
    assert parse_endpoints(":2379") == [("127.0.0.1", 2379)]  # no host: this machine
    assert parse_endpoints(["x:1", "http://y:2"]) == [("x", 1), ("y", 2)]
    assert parse_endpoints("[::1]:2379") == [("[::1]", 2379)]  # the port is after the last colon
    with pytest.raises(ValueError):
        parse_endpoints("h:port")


class FakeWatch:
    def __init__(self, start_revision: int) -> None:
        self.start_revision = start_revision
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self.events.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def cancel(self):
        self.cancelled = True


class FakeClient:
    """aetcd.Client's calls that EtcdStore makes, over a dict; `down` ones fail to connect."""

    made: list["FakeClient"] = []
    down: set[str] = set()
    data: dict[bytes, bytes] = {}
    revision = 1

    def __init__(self, host, port, username, password, timeout, connect_wait_timeout):
        self.host, self.port, self.closed, self.watches, self.calls = host, port, False, [], []
        self.credentials = (username, password)
        self.refuse_once = False  # the next get answers UNAUTHENTICATED (a stale etcd token)
        FakeClient.made.append(self)

    async def connect(self):
        if self.host in FakeClient.down:
            raise ConnectionRefusedError(self.host)

    async def status(self):
        return "ok"

    async def close(self):
        self.closed = True

    @staticmethod
    def _kv(k, v):
        return SimpleNamespace(key=k, value=v, mod_revision=FakeClient.revision, create_revision=1, lease=0)

    async def get_prefix(self, prefix):
        self.calls.append(("get_prefix", prefix))
        kvs = [self._kv(k, v) for k, v in sorted(FakeClient.data.items()) if k.startswith(prefix)]
        return _Response(FakeClient.revision, kvs)

    async def get(self, key):
        if self.refuse_once:
            self.refuse_once = False
            raise store_mod.aetcd.exceptions.UnauthenticatedError("invalid auth token")
        return self._kv(key, FakeClient.data[key]) if key in FakeClient.data else None

    async def put(self, key, value, lease=None):
        self.calls.append(("put", key, value, lease))
        FakeClient.data[key] = value

    async def delete(self, key):
        FakeClient.data.pop(key, None)

    async def transaction(self, compare, success, failure):
        self.calls.append(("txn", compare, success, failure))
        return True, []

    async def watch_prefix(self, prefix, start_revision):
        w = FakeWatch(start_revision)
        self.watches.append(w)
        return w


class _Response(list):
    def __init__(self, revision, kvs):
        super().__init__(kvs)
        self.header = SimpleNamespace(revision=revision)


@pytest.fixture
def fake_etcd(monkeypatch):
    FakeClient.made, FakeClient.down, FakeClient.data, FakeClient.revision = [], set(), {}, 1
    monkeypatch.setattr(store_mod.aetcd, "Client", FakeClient)
    return FakeClient


def test_client_connects_to_an_endpoint_that_answers_and_keeps_it(fake_etcd):
    fake_etcd.down = {"bad"}
    s = EtcdStore("bad:1,good:2")

    async def go():
        c = await s.client()
        assert (c.host, c.port) == ("good", 2)
        assert await s.client() is c  # connected once
        return c

    c = asyncio.run(go())
    tried_bad = [m for m in fake_etcd.made if m.host == "bad"]
    assert len(tried_bad) <= 1 and all(m.closed for m in tried_bad)
    assert not c.closed
    assert c.credentials == (None, None)  # no auth: no user
    asyncio.run(s.close())
    assert c.closed and s._client is None


def test_credentials_are_sent_on_every_connection(fake_etcd):
    fake_etcd.down = {"bad"}
    s = EtcdStore("bad:1,good:2", EtcdAuth("quartz", "pw"))
    asyncio.run(s.client())
    assert fake_etcd.made and all(m.credentials == ("quartz", "pw") for m in fake_etcd.made)


def test_a_stale_token_reconnects_and_retries_once_with_auth_only(fake_etcd):
    fake_etcd.data = {b"/quartz/a": b"1"}

    async def go(s):
        c = await s.client()
        c.refuse_once = True
        return await s.get(b"/quartz/a")

    s = EtcdStore("h:1", EtcdAuth("quartz", "pw"))
    assert asyncio.run(go(s)) == KV(b"/quartz/a", b"1", 1, 1, 0)
    first, second = fake_etcd.made
    assert first.closed and s._client is second  # reconnected (authenticates again), then retried
    fake_etcd.made = []
    with pytest.raises(store_mod.aetcd.exceptions.UnauthenticatedError):
        asyncio.run(go(EtcdStore("h:1")))  # without auth there is nothing to renew: the error stands
    assert len(fake_etcd.made) == 1


def test_no_endpoint_answering_is_a_connection_error_naming_the_last_failure(fake_etcd):
    fake_etcd.down = {"a", "b"}
    with pytest.raises(ConnectionError, match=r"^no etcd endpoint answered: [ab]$"):
        asyncio.run(EtcdStore("a:1,b:2").client())
    assert len(fake_etcd.made) == 2 and all(c.closed for c in fake_etcd.made)


def test_reads_and_writes_convert_to_kv(fake_etcd):
    s = EtcdStore("h:1")
    fake_etcd.revision = 42

    async def go():
        await s.put(b"/quartz/a", b"1", lease="L")
        await s.put(b"/quartz/b", b"2")
        await s.put(b"/other", b"3")
        rev, kvs = await s.list(b"/quartz/")
        assert rev == 42
        assert kvs == [KV(b"/quartz/a", b"1", 42, 1, 0), KV(b"/quartz/b", b"2", 42, 1, 0)]
        assert await s.get(b"/quartz/a") == KV(b"/quartz/a", b"1", 42, 1, 0)
        assert await s.get(b"/quartz/none") is None
        assert await s.revision() == 42
        await s.delete(b"/quartz/a")
        assert await s.get(b"/quartz/a") is None
        assert await s.transaction(["c"], ["s"], ("f",)) == (True, [])
        return s._client.calls

    calls = asyncio.run(go())
    assert ("put", b"/quartz/a", b"1", "L") in calls and ("put", b"/quartz/b", b"2", None) in calls
    assert ("get_prefix", ROOT_SENTINEL) in calls  # the revision comes from a key never written
    assert ("txn", ["c"], ["s"], ["f"]) in calls
    assert ROOT_SENTINEL.startswith(b"/quartz/") and b"\x00" in ROOT_SENTINEL


def test_follow_lists_then_relists_on_every_change_and_after_a_watch_error(fake_etcd):
    """The loop's contract: whole snapshots, in revision order; a watch from the listed revision
    + 1; a failed watch resets the client and lists again; stop ends it and cancels the watch."""
    s = EtcdStore("h:1")
    fake_etcd.data = {b"/quartz/x": b"0"}
    seen = []

    async def go():
        stop = asyncio.Event()

        async def on_state(revision, kvs):
            seen.append((revision, [kv.value for kv in kvs]))
            client = fake_etcd.made[-1]
            if len(seen) == 1:  # a change arrives on the watch
                fake_etcd.revision, fake_etcd.data[b"/quartz/x"] = 2, b"1"
                asyncio.get_running_loop().call_soon(lambda: _push(client, "event"))
            elif len(seen) == 2:  # the watch breaks (compaction, lost connection)
                fake_etcd.revision, fake_etcd.data[b"/quartz/y"] = 3, b"2"
                asyncio.get_running_loop().call_soon(lambda: _push(client, RuntimeError("compacted")))
            else:
                stop.set()

        await asyncio.wait_for(s.follow(b"/quartz/", on_state, stop, interval_s=3600), timeout=30)

    def _push(client, item):
        client.watches[-1].events.put_nowait(item)

    asyncio.run(go())
    assert seen == [(1, [b"0"]), (2, [b"1"]), (3, [b"1", b"2"])]
    first, second = fake_etcd.made[0], fake_etcd.made[-1]
    assert first is not second and first.closed  # the broken client was reset
    assert [w.start_revision for w in first.watches] == [2]
    assert all(w.cancelled for c in fake_etcd.made for w in c.watches)


def test_follow_retries_a_failing_list_until_it_answers(fake_etcd):
    s = EtcdStore("h:1")
    fake_etcd.down = {"h"}
    seen = []

    async def go():
        stop = asyncio.Event()
        orig = EtcdStore.client

        async def client(self):
            if len(fake_etcd.made) >= 2:
                fake_etcd.down = set()  # etcd comes back on the second attempt
            return await orig(self)

        async def on_state(revision, kvs):
            seen.append(revision)
            stop.set()

        s.client = client.__get__(s)
        await asyncio.wait_for(s.follow(b"/quartz/", on_state, stop, interval_s=3600), timeout=30)

    asyncio.run(go())
    assert seen == [1]
    assert fake_etcd.made[0].closed

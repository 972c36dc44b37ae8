import threading

from quartz_cluster.node.rwlock import TaggedRWLock


def test_same_tag_readers_share_and_tag_switches_only_when_drained():
    switches = []
    lock = TaggedRWLock(switches.append)
    inside = threading.Event()
    release = threading.Event()
    other_entered = threading.Event()

    def long_reader():
        with lock.shared(64):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=long_reader)
    t.start()
    inside.wait(10)
    with lock.shared(64):  # same tag joins while the first reader is inside
        pass

    def other_tag():
        with lock.shared(128):
            other_entered.set()

    t2 = threading.Thread(target=other_tag)
    t2.start()
    assert not other_entered.wait(0.2)  # must wait for the ef=64 group to drain
    release.set()
    t.join(10)
    t2.join(10)
    assert other_entered.is_set()
    assert switches == [64, 128]


def test_writer_excludes_readers():
    lock = TaggedRWLock(lambda tag: None)
    in_write = threading.Event()
    done = threading.Event()
    reader_in = threading.Event()

    def writer():
        with lock.exclusive():
            in_write.set()
            done.wait(10)

    w = threading.Thread(target=writer)
    w.start()
    in_write.wait(10)

    def reader():
        with lock.shared(1):
            reader_in.set()

    r = threading.Thread(target=reader)
    r.start()
    assert not reader_in.wait(0.2)
    done.set()
    w.join(10)
    r.join(10)
    assert reader_in.is_set()

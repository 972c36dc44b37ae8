"""A shared/exclusive lock whose shared holders agree on one tag.

hnswlib keeps `ef` as index-global state (there is no per-query ef), and it is not safe to
mutate the graph while it is searched. Searches therefore hold the lock shared, tagged with
their ef: searches with the same ef run together, one with another ef waits until the
current group drains and then switches ef. Writes (add, delete, resize) hold it exclusive,
which also guarantees a label freed by a delete is reused only after every search that
started before the delete has finished. Writers are preferred so searches cannot starve them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TaggedRWLock:
    def __init__(self, on_tag_change: Callable[[int], None]) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._tag: int | None = None
        self._tag_waiters: dict[int, int] = {}  # readers waiting, by tag
        self._on_tag_change = on_tag_change

    @contextmanager
    def shared(self, tag: int) -> Iterator[None]:
        with self._cond:
            self._tag_waiters[tag] = self._tag_waiters.get(tag, 0) + 1
            while self._writer or self._writers_waiting or not self._may_read(tag):
                self._cond.wait()
            self._tag_waiters[tag] -= 1
            if self._tag != tag:
                self._on_tag_change(tag)  # no reader holds the lock: safe to switch
                self._tag = tag
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def reset_tag(self) -> None:
        """The guarded object was replaced: re-apply the tag at the next shared acquisition.
        Call while holding the lock exclusively."""
        self._tag = None

    def _may_read(self, tag: int) -> bool:
        if self._readers == 0:
            return True
        if tag != self._tag:
            return False
        # Same tag as the running group: join it unless readers of another tag are waiting,
        # so a steady stream of one ef cannot starve searches that asked for another.
        return not any(n for t, n in self._tag_waiters.items() if t != tag)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

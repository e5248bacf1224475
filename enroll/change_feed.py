"""A process's search index kept in step with the shared gallery: ``SyncedIndex``.

    synced = SyncedIndex(gallery, lambda: production_version(home))   # once per process
    snapshot = synced.current(model_version)        # an IndexSnapshot, up to date
    snapshot.top_people(query, k)                   # [(name, distance)], nearest person first
    distances, rows = snapshot.search(queries, k)   # snapshot.index.names[rows] are the names
    synced.close()

An ``IndexSnapshot`` is immutable: the index of one model version's vectors at one gallery
version, so an answer built from it never mixes two models or two states of the gallery (embed
with the model of ``snapshot.model_version``; ``current(version)`` asks for that version). It is
brought up to date lazily, by the first search after a change, so a burst of enrolments costs one
update: after adds and appends only, the previous index extended by the new faces' vectors (read by
face id, ``embeddings_after``); after a removal or for a new model version, built from every vector.

How a change made anywhere is noticed:
- PostgreSQL: a background thread ``LISTEN``s on the gallery's channel (every write NOTIFYs at
  commit, payload the gallery version, enroll/postgres_store.py); a notification marks the
  snapshot stale. The thread reconnects when the server restarts (backing off up to 2 s), and
  while it is not listening, and once after each reconnect, freshness is checked by asking the
  database for ``gallery_version()`` instead, so nothing committed meanwhile is missed.
- SQLite and the in-memory gallery (one machine): ``gallery_version()`` before each search, which
  is one indexed MAX query.

The key of a snapshot is (model version, gallery version): the class-change log counts every
add, append and remove; a new production model's vectors are picked up when ``model_version_fn``
(or the caller) names the new version. ``build_index(matrix, names)`` chooses exact (default) or
FAISS search (enroll/index.py).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from enroll.gallery import Closeable
from enroll.index import ExactIndex, top_people

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSnapshot:
    model_version: int
    gallery_version: int
    index: object  # ExactIndex or FaissIndex over the version's vectors; index.names are the people
    build_seconds: float
    last_face_id: int = 0  # the newest face in the index: an update adds the faces after it
    updated: bool = False  # extended from the previous snapshot rather than built from every vector

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def top_people(self, query, k: int) -> list[tuple[str, float]]:
        return top_people(self.index, query, k) if len(self.index) else []


def exact_index(matrix: np.ndarray, names: list[str]):
    return ExactIndex().build(matrix, names)


class ChangeListener(threading.Thread):
    """``LISTEN channel`` on its own connection; ``on_change(version)`` per notification and
    ``on_change(None)`` whenever notifications may have been missed (connect, reconnect, loss)."""

    def __init__(self, url: str, channel: str, on_change: Callable[[int | None], None]):
        super().__init__(name="gallery-change-listener", daemon=True)
        self.url, self.channel, self.on_change = url, channel, on_change
        self.listening = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        from enroll.postgres_schema import connection_kwargs, first_line

        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, keepalives=1, keepalives_idle=5,
                                     keepalives_interval=2, keepalives_count=2, **connection_kwargs()) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.listening.set()
                    self.on_change(None)  # whatever committed before LISTEN took effect
                    backoff = 0.1
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.on_change(int(note.payload) if note.payload.isdigit() else None)
            except psycopg.Error as exc:
                if not self._stopping.is_set():
                    log.warning("gallery change feed lost (%s); reconnecting", first_line(exc))
            finally:
                self.listening.clear()
                self.on_change(None)
            self._stopping.wait(backoff)
            backoff = min(2.0, backoff * 2)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


class SyncedIndex(Closeable):
    def __init__(self, gallery, model_version_fn: Callable[[], int],
                 build_index: Callable[[np.ndarray, list[str]], object] = exact_index, listen: bool = True):
        self.gallery, self.model_version_fn, self.build_index = gallery, model_version_fn, build_index
        self.rebuilds, self.updates = 0, 0  # indexes built from every vector / extended by new faces
        self._snapshot: IndexSnapshot | None = None
        self._generation = 0  # bumped by every notification: a snapshot of an older one is stale
        self._built_generation = -1
        self._notified_version = 0
        self._changed = threading.Condition()
        self._build_lock = threading.Lock()
        channel = getattr(gallery, "notify_channel", None)
        self.listener = ChangeListener(gallery.url, channel, self._on_change) if channel and listen else None
        if self.listener:
            self.listener.start()

    def _on_change(self, version: int | None) -> None:
        with self._changed:
            self._generation += 1
            if version is not None:
                self._notified_version = max(self._notified_version, version)
            self._changed.notify_all()

    @property
    def listening(self) -> bool:
        return bool(self.listener and self.listener.listening.is_set())

    def _fresh(self, snapshot: IndexSnapshot | None, version: int) -> bool:
        if snapshot is None or snapshot.model_version != version:
            return False
        if self.listening:
            return self._built_generation == self._generation
        return snapshot.gallery_version == self.gallery.gallery_version()

    def current(self, model_version: int | None = None) -> IndexSnapshot:
        """The index of ``model_version`` (default: ``model_version_fn()``) as the gallery is now."""
        version = int(self.model_version_fn() if model_version is None else model_version)
        snapshot = self._snapshot
        if self._fresh(snapshot, version):
            return snapshot
        with self._build_lock:  # one rebuild at a time; the others then find it fresh
            snapshot = self._snapshot
            if self._fresh(snapshot, version):
                return snapshot
            return self._rebuild(version)

    def _rebuild(self, version: int) -> IndexSnapshot:
        start = time.perf_counter()
        generation = self._generation  # read first: a change during the read makes this stale again
        gallery_version = self.gallery.gallery_version()
        extended = self._extended(self._snapshot, version)
        if extended is None:
            names, matrix, last = self.gallery.embeddings_after(version, 0)
            index = self.build_index(matrix, names) if names else ExactIndex()
            self.rebuilds += 1
        else:
            index, last = extended
            self.updates += 1
        snapshot = IndexSnapshot(version, gallery_version, index, time.perf_counter() - start,
                                 last_face_id=last, updated=extended is not None)
        self._snapshot, self._built_generation = snapshot, generation
        return snapshot

    def _extended(self, previous: IndexSnapshot | None, version: int):
        """(index, last face id): ``previous``'s index plus the faces enrolled since, when every change
        since it was an add or an append (faces only arrive, in face-id order: gallery writes are
        serialised); None when it must be built afresh (the first build, a removal, another model
        version, FAISS, or nothing to extend)."""
        if (previous is None or previous.model_version != version or not len(previous)
                or not hasattr(previous.index, "extended")):
            return None  # (an empty gallery's index is an ExactIndex whatever build_index makes)
        if any(change.kind == "remove" for change in self.gallery.changes_since(previous.gallery_version)):
            return None  # whose faces went is not in the log (removal erases the name): build afresh
        names, matrix, last = self.gallery.embeddings_after(version, previous.last_face_id)
        return previous.index.extended(matrix, names), last

    def search(self, queries, k: int, model_version: int | None = None):
        """(snapshot, distances, rows) of the ``k`` nearest faces to each query row."""
        snapshot = self.current(model_version)
        distances, rows = snapshot.search(queries, k)
        return snapshot, distances, rows

    def wait_for(self, gallery_version: int, timeout: float = 5.0) -> bool:
        """Block until this process has heard of gallery version ``gallery_version`` (read your own
        write on another replica); True at once when not listening, since searches then ask."""
        if not self.listening:
            return True
        with self._changed:
            return self._changed.wait_for(lambda: self._notified_version >= gallery_version, timeout)

    def close(self) -> None:
        if self.listener:
            self.listener.stop()

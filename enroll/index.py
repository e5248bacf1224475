"""Nearest-face search over the gallery's embeddings: exact (numpy) or approximate (FAISS).

Both take L2-normalised vectors and answer in L2 distance, the distance τ is calibrated in, with
one interface: ``build(matrix, names)`` then ``search(queries, k) -> (distances, rows)``, rows
being -1 where fewer than k vectors exist. ``ExactIndex`` is a matrix product (a 1M × 128 gallery
is ~10 ms a query on two cores); ``FaissIndex`` (HNSW graph or IVF-Flat lists) trades a little
recall, measured by ``recall_at_1``, for sub-millisecond queries on large galleries.
"""
from __future__ import annotations

import numpy as np

# Query rows × gallery rows scored per chunk: bounds the distance matrix at ~256 MB.
_CHUNK_ELEMENTS = 64_000_000


def normalise(matrix) -> np.ndarray:
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class _Rows:
    """Row buffers with spare capacity, shared by an index and the one ``extended`` from it."""

    def __init__(self, matrix: np.ndarray, names: np.ndarray, used: int):
        self.matrix, self.names, self.used = matrix, names, used


class ExactIndex:
    def __init__(self):
        self.matrix = np.zeros((0, 0), np.float32)
        self.names = np.array([], dtype=object)
        self._rows: _Rows | None = None

    def build(self, matrix, names=None) -> "ExactIndex":
        self.matrix = np.ascontiguousarray(normalise(matrix)) if len(matrix) else np.zeros((0, 0), np.float32)
        self.names = np.array(list(names) if names is not None else range(len(self.matrix)), dtype=object)
        self._rows = None
        return self

    def extended(self, matrix, names) -> "ExactIndex":
        """A new index of these rows and ``matrix``'s; this one stays as it is, for searches in flight.

        The rows go into spare capacity after this index's own (one copy into a buffer 1.25× the
        size, then none until it fills), so adding a few faces to a 1M-face index costs microseconds
        instead of a copy of 512 MB. Only the newest index of a buffer writes into it."""
        if not len(matrix):
            return self
        if not len(self):
            return ExactIndex().build(matrix, names)
        add, n = normalise(matrix), len(self)
        if add.shape[1] != self.matrix.shape[1]:
            raise ValueError(f"vectors of {add.shape[1]} dimensions added to an index of {self.matrix.shape[1]}")
        rows, end = self._rows, n + len(add)
        if rows is None or rows.used != n or len(rows.matrix) < end:
            capacity = end + end // 4 + 1024
            rows = _Rows(np.empty((capacity, add.shape[1]), np.float32), np.empty(capacity, dtype=object), n)
            rows.matrix[:n], rows.names[:n] = self.matrix, self.names
        rows.matrix[n:end] = add
        rows.names[n:end] = list(names)
        rows.used = end
        new = ExactIndex()
        new.matrix, new.names, new._rows = rows.matrix[:end], rows.names[:end], rows
        return new

    def __len__(self) -> int:
        return len(self.matrix)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = normalise(queries)
        n, kk = len(self.matrix), min(k, len(self.matrix))
        dist = np.full((len(queries), k), np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        if kk == 0:
            return dist, rows
        step = max(1, _CHUNK_ELEMENTS // n)
        for start in range(0, len(queries), step):
            # For unit vectors ||q - x||^2 = 2 - 2 q.x: one matrix product scores the whole gallery.
            sq = np.maximum(2.0 - 2.0 * (queries[start:start + step] @ self.matrix.T), 0.0)
            top = np.argpartition(sq, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(sq), 1))
            top_sq = np.take_along_axis(sq, top, axis=1)
            order = np.argsort(top_sq, axis=1, kind="stable")
            rows[start:start + step, :kk] = np.take_along_axis(top, order, axis=1)
            dist[start:start + step, :kk] = np.sqrt(np.take_along_axis(top_sq, order, axis=1))
        return dist, rows


class FaissIndex:
    """``method="hnsw"`` (graph, no training, best recall per ms) or ``"ivf"`` (k-means lists,
    quicker to build, recall set by ``nprobe``; 0 = about 6% of the lists)."""

    def __init__(self, method: str = "hnsw", m: int = 32, ef_construction: int = 40, ef_search: int = 64,
                 nlist: int = 0, nprobe: int = 0):
        if method not in ("hnsw", "ivf"):
            raise ValueError(f"FaissIndex method must be 'hnsw' or 'ivf', got {method!r}")
        self.method, self.m, self.ef_construction, self.ef_search = method, m, ef_construction, ef_search
        self.nlist, self.nprobe = nlist, nprobe
        self.index = None
        self.names = np.array([], dtype=object)

    def build(self, matrix, names=None) -> "FaissIndex":
        try:
            import faiss
        except ImportError:
            raise ImportError("FaissIndex needs faiss-cpu: pip install -e '.[index]'") from None
        matrix = np.ascontiguousarray(normalise(matrix))
        d = matrix.shape[1]
        if self.method == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.m)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            # ~4 sqrt(n) lists, the FAISS guideline, each trained on >= 39 points (k-means' minimum).
            nlist = self.nlist or int(np.clip(4 * np.sqrt(len(matrix)), 1, max(1, len(matrix) // 39)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            # 64 points per list trains k-means well enough and keeps a 1M build to about a minute.
            index.train(matrix[np.random.default_rng(0).permutation(len(matrix))[:nlist * 64]])
            # Probing ~6% of the lists keeps recall@1 near 1 for probes of enrolled people.
            index.nprobe = min(nlist, self.nprobe or max(8, nlist // 16))
        index.add(matrix)
        self.index = index
        self.names = np.array(list(names) if names is not None else range(len(matrix)), dtype=object)
        return self

    def __len__(self) -> int:
        return 0 if self.index is None else self.index.ntotal

    @property
    def effort(self) -> int:
        """Search effort: HNSW's efSearch or IVF's nprobe; more = better recall, slower queries."""
        return int(self.index.hnsw.efSearch if self.method == "hnsw" else self.index.nprobe)

    @effort.setter
    def effort(self, value: int) -> None:
        if self.method == "hnsw":
            self.index.hnsw.efSearch = int(value)
        else:
            self.index.nprobe = int(min(value, self.index.nlist))

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(normalise(queries))
        if not len(self):
            return np.full((len(queries), k), np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        sq, rows = self.index.search(queries, k)  # FAISS answers squared L2
        dist = np.where(rows >= 0, np.sqrt(np.maximum(sq, 0.0)), np.inf).astype(np.float32)
        return dist, rows.astype(np.int64)


def recall_at_1(approx, exact, queries) -> float:
    """Share of queries whose approximate nearest neighbour is the exact one (ties count as hits)."""
    approx_dist, approx_rows = approx.search(queries, 1)
    exact_dist, exact_rows = exact.search(queries, 1)
    hits = (approx_rows[:, 0] == exact_rows[:, 0]) | np.isclose(approx_dist[:, 0], exact_dist[:, 0], atol=1e-6)
    return float(np.mean(hits)) if len(hits) else float("nan")


def tune_effort(approx: "FaissIndex", exact: ExactIndex, queries, target: float = 0.99) -> tuple[int, float]:
    """Raise ``approx.effort`` (doubling) until recall@1 on ``queries`` reaches ``target``; returns
    (effort, recall). Recall depends on the data, so it is tuned on probes like the real ones."""
    effort = approx.effort
    while True:
        recall = recall_at_1(approx, exact, queries)
        limit = 4096 if approx.method == "hnsw" else approx.index.nlist
        if recall >= target or effort >= limit:
            return effort, recall
        effort = min(2 * effort, limit)
        approx.effort = effort


def top_people(index, query, k: int) -> list[tuple[str, float]]:
    """The ``k`` nearest *people* to one query: a person's distance is that of their closest face."""
    n = len(index)
    want = min(n, 4 * k)
    while True:
        dist, rows = index.search(query, max(want, 1))
        best: dict[str, float] = {}
        for d, r in zip(dist[0], rows[0]):
            if r >= 0:
                best.setdefault(index.names[r], float(d))
        if len(best) >= k or want >= n:
            return sorted(best.items(), key=lambda item: item[1])[:k]
        want = min(n, want * 4)  # many faces per person crowd the first hits: look further

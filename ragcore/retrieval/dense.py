"""Dense retrieval: exact top-k by cosine or inner product over stored vectors, on the CPU or a GPU.

The CPU kernels are ragcore's own (C++; AMX, AVX-512, AVX2/FMA/F16C chosen at run time, scalar
elsewhere; ``ragcore._core.dense_isa()`` tells which): one query at a time is a single pass over the
rows that scores and selects without writing the scores out (rows split over threads); batches go
through a blocked matrix-product kernel with selection per block. With AMX (Intel Sapphire Rapids and
later) the batch kernel multiplies bf16 tiles to select candidates under a proven error bound and
re-scores those exactly, so results stay those of float32. The CUDA kernels (``device="cuda"``) keep the
collection on the GPU.

Storage types (``dtype``):

* ``"float32"``: exact.
* ``"float16"``: half the bytes; scored as float32(query) . float32(row), so the only error is the
  rounding of the stored rows (relative 2^-11).
* ``"int8"``: a quarter of the bytes; symmetric scalar quantisation with **one scale per vector**
  (row ~= scale * q, q in [-127, 127]). Per-vector scales need no training pass, never clip a
  later ``add``, and keep the score an integer dot product times one float per row; per-dimension
  scales (faiss SQ8) would need the data up front and clip rows added later. One query is scanned
  with the query quantised to int8 as well, keeping every row whose score could still reach the
  top-k under a proven error bound, and those rows are re-scored exactly (float query x stored row),
  so results are exact with respect to what is stored.

``prefilter="int8"`` (CPU, float32 or float16 rows) keeps an int8 copy of the rows beside them (+26% memory
at 384 dimensions: one byte per dimension and four floats per row). One query (up to three per call)
then scans the int8 copy, a quarter of float32's bytes, keeps every row whose score could still reach
the top-k under a proven bound on both quantisation errors (the query's and the row's), and re-scores
those from the stored rows: the results are exactly those of a scan of the float rows (same ids, same
scores), at close to int8's speed when the scan is memory-bound. Batches are compute-bound: with AMX
(k <= 40) or AVX-512 VNNI they score the int8 copy with integer tiles (AMX-INT8 has twice bf16's rate,
``vpdpbusd`` four times float32's multiply-adds per instruction) under the same bound and re-score
exactly; on AVX2, and with AMX for larger k, they take the float rows' path.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Dict, NamedTuple, Optional, Sequence, Union

import numpy as np

from .. import _core
from .._validate import ALL_THREADS as _ALL_THREADS, check_ids as _check_ids, check_k as _check_k
from .._validate import threads as _threads
from . import _dense_io
from ._dense_rows import (_F16_MAX, _as_float_matrix, _check_ip_norms, _check_prefilter, _cuda_queries,
                          _normalised, _prefilter_codes, _quantise_int8)
from ._filter import allowed_mask
from .hits import Hits, _is_cuda_array

__all__ = ["DenseIndex", "cuda_available", "load"]

METRICS = ("cosine", "ip")
DTYPES = ("float32", "float16", "int8", "bfloat16")
_CPU_DTYPES = ("float32", "float16", "int8")
_CUDA_DTYPES = ("float32", "float16", "bfloat16")


def _cuda_module():
    try:
        from .. import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _cuda


def cuda_available() -> bool:
    """True when ragcore was built with its CUDA kernels and a CUDA GPU is visible."""
    mod = _cuda_module()
    if mod is None:
        return False
    try:
        return int(mod.device_count()) > 0
    except Exception:  # pragma: no cover - a broken driver counts as no GPU
        return False


def _no_cuda_reason() -> str:
    if _cuda_module() is None:
        return "this ragcore was built without its CUDA kernels (no CUDA compiler at build time)"
    return "no CUDA GPU is visible (no driver or no device)"


class _View(NamedTuple):
    """What a search sees: the first ``n`` rows and their side arrays, as one immutable whole.

    Writers (add, delete, set_prefilter, load) change the index under a lock and then publish a new
    view with one attribute assignment; rows below ``n`` are never written again (an add writes past
    them or into a grown copy) and the deleted mask is copied on write, so a view taken by a search
    stays valid and consistent while other threads add and delete."""

    n: int
    n_deleted: int
    data: Optional[np.ndarray]
    aux: Optional[np.ndarray]
    deleted: Optional[np.ndarray]
    pre: Optional[np.ndarray]
    pre_aux: Optional[np.ndarray]
    ids: Optional[np.ndarray]


class DenseIndex:
    """Exact top-k search of vectors by cosine similarity or inner product.

    Parameters
    ----------
    dim : int
        Vector dimension.
    metric : {"cosine", "ip"}, default "cosine"
        ``"cosine"`` normalises vectors once when they are added and queries when they arrive, then
        ranks by inner product.
    dtype : {"float32", "float16", "int8", "bfloat16"}, default "float32"
        How rows are stored (see the module docstring); ``"int8"`` is CPU only, ``"bfloat16"`` GPU only.
    device : {"auto", "cpu", "cuda"}, default "auto"
        ``"auto"`` takes the GPU when one is available (and ``dtype`` runs there), else the CPU.
    prefilter : {None, "int8"}, default None
        CPU, float32 / float16 rows: keep an int8 copy that one-query searches scan first, re-scoring
        the candidates a proven bound leaves from the stored rows; exact results, ~3-4x faster
        single-query scans, +26% memory at 384 dimensions (see the module docstring).
        :meth:`set_prefilter` adds or drops it later.

    Examples
    --------
    >>> import numpy as np, ragcore as rc
    >>> index = rc.DenseIndex(dim=3, device="cpu")
    >>> index.add(np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32), ids=["x", "y", "xy"])
    DenseIndex(dim=3, metric='cosine', dtype='float32', device='cpu', n=3)
    >>> hits = index.search(np.array([1, 0.1, 0], dtype=np.float32), k=2)
    >>> hits.ids.tolist()
    [['x', 'xy']]
    """

    def __init__(self, dim: int, metric: str = "cosine", dtype: str = "float32", device: str = "auto",
                 prefilter: Optional[str] = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        _check_prefilter(prefilter, dtype, device)
        if device == "auto":
            device = "cuda" if dtype in _CUDA_DTYPES and prefilter is None and cuda_available() else "cpu"
        if device == "cuda":
            if not cuda_available():
                raise ValueError(f"device='cuda' asked for, but {_no_cuda_reason()}; use device='cpu' or 'auto'")
            if dtype not in _CUDA_DTYPES:
                raise ValueError(f"dtype {dtype!r} is not supported on the GPU; use one of {_CUDA_DTYPES}")
        elif dtype not in _CPU_DTYPES:
            raise ValueError(f"dtype {dtype!r} is GPU only; on the CPU use one of {_CPU_DTYPES}")
        self.dim = int(dim)
        self.metric = metric
        self.dtype = dtype
        self.device = device
        self._n = 0                      # rows stored, deleted included
        self._n_deleted = 0
        self._ids: Optional[np.ndarray] = None   # caller's ids per row (int64 or object), or None
        self._id_rows: Optional[Dict[Any, int]] = None  # id -> row, built on first delete
        self._deleted: Optional[np.ndarray] = None      # uint8 (capacity,), or None when nothing deleted
        #: Free-form JSON-serialisable notes saved with the index (e.g. which encoder made the vectors).
        self.info: Dict[str, Any] = {}
        if device == "cuda":
            self._store = _cuda_module().DenseStore(self.dim, dtype, 0)
            self._data = self._aux = None
        else:
            self._store = None
            np_dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8}[dtype]
            self._data = np.empty((0, self.dim), np_dtype)
            self._aux = np.empty((0, 2), np.float32) if dtype == "int8" else None
        self.prefilter: Optional[str] = None
        self._pre: Optional[np.ndarray] = None       # int8 prefilter codes (capacity, dim), or None
        self._pre_aux: Optional[np.ndarray] = None   # their (capacity, 4) float32 aux
        self._lock = threading.RLock()               # writers; searches read self._view without it
        self._publish()
        if prefilter is not None:
            self.set_prefilter(prefilter)

    def _publish(self) -> None:
        """Make the current rows visible to searches (called by writers, holding the lock)."""
        n = self._n
        cut = (lambda a: None if a is None else a[:n])
        self._view = _View(n, self._n_deleted, cut(self._data), cut(self._aux),
                           cut(self._deleted) if self._n_deleted else None, cut(self._pre), cut(self._pre_aux),
                           cut(self._ids))

    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of live (not deleted) vectors: the documents a search can return."""
        v = self._view
        return v.n - v.n_deleted

    @property
    def ntotal(self) -> int:
        """Rows stored, deleted ones included: row indices (``Hits.indices``) run from 0 to ntotal - 1,
        and a ``filter`` mask has this length. Equal to ``len(index)`` until rows are deleted."""
        return self._view.n

    @property
    def ids(self) -> Optional[np.ndarray]:
        """The caller's ids of every row (deleted included), or None when rows have no ids."""
        return self._view.ids

    def __repr__(self) -> str:
        pre = "" if self.prefilter is None else f", prefilter={self.prefilter!r}"
        return (f"DenseIndex(dim={self.dim}, metric={self.metric!r}, dtype={self.dtype!r}, "
                f"device={self.device!r}{pre}, n={len(self)})")

    def set_prefilter(self, prefilter: Optional[str]) -> "DenseIndex":
        """Add (``"int8"``) or drop (``None``) the int8 prefilter of a CPU float32 / float16 index; adding
        it quantises every stored row (deleted ones included). Returns the index itself.

        >>> import numpy as np, ragcore as rc
        >>> x = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)
        >>> index = rc.DenseIndex(16, device="cpu").add(x).set_prefilter("int8")
        >>> plain = rc.DenseIndex(16, device="cpu").add(x)
        >>> q = x[:1] + 0.1
        >>> index.search(q, k=5).indices.tolist() == plain.search(q, k=5).indices.tolist()
        True
        """
        _check_prefilter(prefilter, self.dtype, self.device)
        with self._lock:
            if prefilter is None:
                self.prefilter = self._pre = self._pre_aux = None
            else:
                cap = self._data.shape[0]
                codes, aux = _prefilter_codes(self._data[: self._n])
                pre, pre_aux = np.empty((cap, self.dim), np.int8), np.empty((cap, 4), np.float32)
                pre[: self._n], pre_aux[: self._n] = codes, aux
                self._pre, self._pre_aux, self.prefilter = pre, pre_aux, prefilter
            self._publish()
        return self

    # ----------------------------------------------------------------------------------------
    def _prepare(self, vectors: Any, what: str) -> np.ndarray:
        arr = _as_float_matrix(vectors, self.dim, what)
        if self.metric == "cosine":
            return _normalised(arr, what)
        _check_ip_norms(arr, None, what, "with metric='ip' its inner products could overflow float32; scale "
                        "the vectors down")
        return arr

    def _encode_rows(self, arr: np.ndarray):
        if self.dtype == "float32":
            return np.ascontiguousarray(arr, np.float32), None
        if self.dtype == "float16":
            if arr.size and float(np.abs(arr).max()) > _F16_MAX:
                raise ValueError(f"vectors have values beyond float16's range (|x| > {_F16_MAX:g}); "
                                 "use dtype='float32' or metric='cosine'")
            return arr.astype(np.float16), None
        return _quantise_int8(arr)

    def _grow(self, need: int) -> None:
        cap = self._data.shape[0]
        writable = self._data.flags.writeable and not isinstance(self._data, np.memmap)
        if need <= cap and writable:
            return
        new_cap = max(need, 2 * cap if writable else need, 1024)

        def grown(arr: Optional[np.ndarray], zero: bool = False) -> Optional[np.ndarray]:
            """arr's first _n rows in a new writable buffer of new_cap rows (zeros past them if asked)."""
            if arr is None:
                return None
            out = (np.zeros if zero else np.empty)((new_cap,) + arr.shape[1:], arr.dtype)
            out[: self._n] = arr[: self._n]
            return out

        self._data, self._aux = grown(self._data), grown(self._aux)
        self._pre, self._pre_aux = grown(self._pre), grown(self._pre_aux)
        self._deleted = grown(self._deleted, zero=True)

    def add(self, vectors: Any, ids: Optional[Sequence[Union[str, int]]] = None) -> "DenseIndex":
        """Add vectors (n, dim) (or one (dim,) vector), with optional ids (unique str or int).

        Everything is checked before anything is stored: on an error the index is unchanged.
        Searches running in other threads meanwhile see the index before or after the whole add.
        Returns the index itself.
        """
        arr = self._prepare(vectors, "vectors")
        with self._lock:
            self._add(arr, ids)
            self._publish()
        return self

    def _add(self, arr: np.ndarray, ids: Optional[Sequence[Union[str, int]]]) -> None:
        n = arr.shape[0]
        id_arr = _check_ids(ids)
        if id_arr is not None:
            if len(id_arr) != n:
                raise ValueError(f"got {len(id_arr)} ids for {n} vectors")
            if self._n and self._ids is None:
                raise ValueError("this index was built without ids: add() more vectors without ids")
            if self._ids is not None and len(id_arr) and self._ids.dtype != id_arr.dtype:
                raise TypeError(f"ids must be {'str' if self._ids.dtype == object else 'int'} like the ones "
                                "already in the index")
            if self._n:
                rows = self._id_map()
                dup = next((i for i in id_arr.tolist() if i in rows), None)
                if dup is not None:
                    raise ValueError(f"id {dup!r} is already in the index")
        elif self._ids is not None and n:
            raise ValueError("this index has ids: pass ids= for the new vectors too")
        if n == 0:
            return
        if self._store is not None:  # GPU: the store converts to its dtype on the device
            if self.dtype == "float16" and float(np.abs(arr).max()) > _F16_MAX:
                raise ValueError(f"vectors have values beyond float16's range (|x| > {_F16_MAX:g})")
            self._store.add(arr)
            if self._deleted is not None:  # the host's mask covers every row, as on the CPU
                self._deleted = np.concatenate([self._deleted[: self._n], np.zeros(n, np.uint8)])
            self._append_ids(id_arr, n)
            self._n += n
            return
        rows, aux = self._encode_rows(arr)
        pre = None if self._pre is None else _prefilter_codes(rows)
        self._grow(self._n + n)
        self._data[self._n: self._n + n] = rows
        if aux is not None:
            self._aux[self._n: self._n + n] = aux
        if pre is not None:
            self._pre[self._n: self._n + n], self._pre_aux[self._n: self._n + n] = pre
        self._append_ids(id_arr, n)
        self._n += n

    def _append_ids(self, id_arr: Optional[np.ndarray], n: int) -> None:
        if id_arr is None:
            return
        if self._ids is None:
            self._ids = id_arr.copy()
        else:
            if self._ids.shape[0] < self._n + n or not self._ids.flags.writeable:
                ids = np.empty(max(self._n + n, 2 * self._ids.shape[0]), self._ids.dtype)
                ids[: self._n] = self._ids[: self._n]
                self._ids = ids
            self._ids[self._n: self._n + n] = id_arr
        if self._id_rows is not None:
            for r, i in enumerate(id_arr.tolist(), start=self._n):
                self._id_rows[i] = r

    def _id_map(self) -> Dict[Any, int]:
        if self._id_rows is None:
            self._id_rows = {i: r for r, i in enumerate(self._ids[: self._n].tolist())}
        return self._id_rows

    def delete(self, ids: Any) -> int:
        """Delete vectors by id (the caller's ids, or row indices when the index has no ids).

        Deleted rows are never returned by :meth:`search`; their space is kept (row indices stay
        stable). Unknown or already deleted ids raise ``KeyError`` and nothing is deleted.
        Searches running in other threads meanwhile see all of the deletes or none.
        Returns the number of rows deleted.
        """
        if isinstance(ids, (str, bytes, int, np.integer)):
            ids = [ids]
        ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        with self._lock:
            count = self._delete(ids)
            self._publish()
        return count

    def _delete(self, ids: list) -> int:
        rows = []
        if self._ids is None:
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                    raise TypeError(f"this index has no ids: delete() takes row indices, got {i!r}")
                if not 0 <= i < self._n:
                    raise KeyError(f"row {i} is not in the index (it has {self._n} rows)")
                rows.append(int(i))
        else:
            m = self._id_map()
            for i in ids:
                if i not in m:
                    raise KeyError(f"id {i!r} is not in the index")
                rows.append(m[i])
        rows_arr = np.unique(np.asarray(rows, np.int64))
        if len(rows_arr) != len(rows):
            raise ValueError("the same id appears twice in delete()")
        if self._deleted is not None and len(rows_arr):
            gone = rows_arr[self._deleted[rows_arr] != 0]
            if len(gone):
                who = int(gone[0]) if self._ids is None else self._ids[int(gone[0])]
                raise KeyError(f"id {who!r} was already deleted")
        if not len(rows_arr):
            return 0
        # a new mask covering every row (and the CPU buffer's capacity, which _grow keeps in step):
        # copied, never written in place, since searches may be reading the current one
        need = self._n if self._store is not None else max(self._data.shape[0], self._n)
        dele = np.zeros(need, np.uint8)
        if self._deleted is not None:
            dele[: self._n] = self._deleted[: self._n]
        dele[rows_arr] = 1
        if self._store is not None:
            self._store.set_deleted(rows_arr)
        self._deleted = dele
        self._n_deleted += len(rows_arr)
        return int(len(rows_arr))

    # ----------------------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, *, threads: Optional[int] = None, filter: Any = None) -> Hits:
        """Top-k rows for one query (dim,) or a batch (nq, dim) of float vectors (the
        :class:`~ragcore.Retriever` protocol).

        Parameters
        ----------
        queries : array of float, shape (dim,) or (nq, dim)
            float32 (float16 / float64 are converted), C-contiguous, finite; on a GPU index also a CuPy
            (``__cuda_array_interface__``) float32 array.
        k : int, default 10
            Results per query, capped at the number of live rows (at least 1): an index of 5 live rows
            gives 5 columns for ``k=10``; an empty one pads with index -1 and score -inf.
        threads : int, optional
            CPU threads (default: all cores). One query is split over the rows; a batch over queries.
            Results do not depend on it (a GPU index validates and ignores it).
        filter : bool mask of length ``ntotal``, or iterable of ids, optional
            Restrict the candidates before top-k, as deleted rows are: the result is the unfiltered
            ranking restricted to the allowed rows. A numpy bool array or a list of bool over the rows
            stored (``ntotal``, deleted ones included: row indices are what ``Hits.indices`` holds), or
            the allowed ids (the caller's ids, or row indices when the index has none). An id the
            index never held raises ``ValueError``; a deleted row's id is accepted and matches nothing.
            See :class:`~ragcore.Retriever` for every rule.

        Returns
        -------
        Hits
            ``indices`` (row numbers, int64) and ``scores`` (float32) of shape (nq, min(k, live rows)), best first,
            ties to the lower row; ``ids`` when the index has ids. On a GPU index, CuPy (or any
            ``__cuda_array_interface__``) queries give CuPy results without a host round trip.

        Examples
        --------
        >>> import numpy as np, ragcore as rc
        >>> index = rc.DenseIndex(dim=2, device="cpu").add(np.eye(2, dtype=np.float32), ids=["x", "y"])
        >>> q = np.array([1, 0.5], dtype=np.float32)
        >>> index.search(q, k=2).ids.tolist(), index.search(q, k=2, filter=["y"]).ids.tolist()
        ([['x', 'y']], [['y', None]])
        """
        k = _check_k(k)
        nt = _ALL_THREADS if threads is None else _threads(threads)
        if self._store is not None:
            with self._lock:  # the GPU store changes in place: searches and writes take turns
                v = self._view
                skip = None if filter is None else ~self._allowed(v, filter)
                return self._search_cuda(queries, min(k, max(v.n - v.n_deleted, 1)), skip)
        v = self._view  # one snapshot from start to end
        k = min(k, max(v.n - v.n_deleted, 1))  # capped at the live rows: k=10**9 must not allocate 12 GB
        if filter is not None:  # the kernels skip the rows of the deleted mask: add the ones not allowed
            skip = ~self._allowed(v, filter)
            if v.deleted is not None:
                np.logical_or(skip, v.deleted, out=skip)
            v = v._replace(deleted=skip)
        q = self._prepare(queries, "queries")
        idx, scores = _core.dense_search(v.data, v.aux, v.deleted, q, k, nt, v.pre, v.pre_aux)
        return Hits(idx, scores, v.ids)

    def _allowed(self, v: _View, filter: Any) -> np.ndarray:
        """The rows of view ``v`` that ``filter`` allows: bool (v.n,)."""
        return allowed_mask(filter, v.n, v.ids, self._id_pos)

    def _id_pos(self) -> Dict[Any, int]:
        """id -> row (rows added after a search's view are past its ``n``: unknown to it)."""
        rows = self._id_rows
        if rows is None:
            with self._lock:  # built from _ids and _n, which writers change together under the lock
                rows = self._id_map()
        return rows

    def _search_cuda(self, queries: Any, k: int, skip: Optional[np.ndarray]) -> Hits:
        """Search the GPU store (holding the lock); ``skip``: bool (rows,) left out besides the deleted."""
        if k > 1024:
            raise ValueError(f"k must be <= 1024 on the GPU, got {k}")
        extra = {} if skip is None else {"skip": skip.view(np.uint8)}  # unfiltered: the store's plain call
        if _is_cuda_array(queries):
            q = _cuda_queries(queries, self.dim, self.metric)
            import cupy as cp

            nq = q.shape[0]
            idx = cp.empty((nq, k), cp.int64)
            scores = cp.empty((nq, k), cp.float32)
            stream = cp.cuda.get_current_stream().ptr
            self._store.search_device(q.data.ptr, nq, k, idx.data.ptr, scores.data.ptr, stream, **extra)
            return Hits(idx, scores, self.ids)
        q = self._prepare(queries, "queries")
        idx, scores = self._store.search(q, k, **extra)
        return Hits(idx, scores, self.ids)

    # ----------------------------------------------------------------------------------------
    def vectors(self) -> np.ndarray:
        """The stored rows as float32 (n, dim), deleted ones included (int8 rows dequantised)."""
        if self._store is not None:
            with self._lock:
                return self._store.to_host()
        v = self._view
        if self.dtype == "int8":
            return v.data.astype(np.float32) * v.aux[:, :1]
        return v.data.astype(np.float32)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Save to a directory (atomically: a crash never leaves a half-written index). Adds and
        deletes from other threads meanwhile are in the saved index entirely or not at all."""
        with self._lock:
            v, prefilter = self._view, self.prefilter
            host = self._store.to_host() if self._store is not None else None
        _dense_io.save(path, dim=self.dim, metric=self.metric, dtype=self.dtype, view=v, prefilter=prefilter,
                       host=host, info=self.info)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True,
             device: str = "auto") -> "DenseIndex":
        """Load an index saved by :meth:`save` (``mmap``: map the rows from disk, no copy; an
        ``add`` copies them into memory first). ``device`` as in the constructor; ``"auto"`` keeps an
        index with an int8 prefilter on the CPU, and ``device="cuda"`` loads its float rows only. A
        bfloat16 index (saved from the GPU) loads on the CPU as float32, exactly."""
        return _dense_io.load(cls, path, mmap=mmap, verify=verify, device=device, cuda_available=cuda_available)

    def _adopt(self, vec: np.ndarray, aux: Optional[np.ndarray], pre: Optional[tuple], ids: Optional[np.ndarray],
               dele: Optional[np.ndarray], info: Dict[str, Any]) -> None:
        """Take the checked arrays of a loaded index (this index is new and empty): rows, int8 scales,
        (prefilter codes, aux) or None, ids, the deleted mask, info."""
        if self._store is not None:
            self._store.add(np.ascontiguousarray(vec, dtype=np.float32))
        else:
            self._data, self._aux = vec, aux
            if pre is not None:
                self._pre, self._pre_aux = pre
                self.prefilter = "int8"
        self._n = vec.shape[0]
        self._ids = ids
        self.info = info
        if dele is not None:
            self._deleted = dele if self._store is None else np.array(dele)
            self._n_deleted = int(np.count_nonzero(dele))
            if self._store is not None and self._n_deleted:
                self._store.set_deleted(np.flatnonzero(dele).astype(np.int64))
        self._publish()


def load(path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True, device: str = "auto") -> DenseIndex:
    """Load a saved :class:`DenseIndex`."""
    return DenseIndex.load(path, mmap=mmap, verify=verify, device=device)

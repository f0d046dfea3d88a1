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

import json
import os
import threading
from typing import Any, Dict, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import _core, storage
from .hits import Hits, _is_cuda_array
from .sparse import _ALL_THREADS, _check_ids, _check_k, _threads

__all__ = ["DenseIndex", "cuda_available", "load"]

METRICS = ("cosine", "ip")
DTYPES = ("float32", "float16", "int8", "bfloat16")
_CPU_DTYPES = ("float32", "float16", "int8")
_CUDA_DTYPES = ("float32", "float16", "bfloat16")
_KIND = "dense"
_F16_MAX = 65504.0
_IP_MAX_NORM = 1e18


def _cuda_module():
    try:
        from . import _cuda  # type: ignore[attr-defined]
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


def _as_float_matrix(x: Any, dim: int, what: str) -> np.ndarray:
    """Validate vectors: a float array (n, dim) or (dim,), C-contiguous, finite -> float32 (n, dim)."""
    if _is_cuda_array(x):
        raise TypeError(f"{what} is a GPU array: pass a numpy array (GPU arrays are accepted by "
                        "search on a device='cuda' index)")
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{what} must be an array of floats: {e}") from None
    if arr.dtype.kind != "f":
        raise TypeError(f"{what} have dtype {arr.dtype}, expected float32 (or float16/float64)")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (n, {dim}) or ({dim},), got {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, expected {dim} (shape {arr.shape})")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{what} are not C-contiguous (strides {arr.strides}): pass "
                         "np.ascontiguousarray(...)")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all() and np.isfinite(x).all():
            raise ValueError(f"{what} overflow float32")
    finite = np.isfinite(arr).all(axis=1) if arr.size else np.ones(arr.shape[0], bool)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{what} row {row} has NaN or infinite values")
    return arr


def _normalised(arr: np.ndarray, what: str) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr, dtype=np.float64))
    if arr.shape[0] and not (norms > 0).all():
        row = int(np.flatnonzero(~(norms > 0))[0])
        raise ValueError(f"{what} row {row} has zero norm: its cosine is undefined")
    return (arr / norms[:, None]).astype(np.float32)


def _prefilter_codes(x: np.ndarray, threads: int = _ALL_THREADS):
    """The int8 prefilter of rows x (n, dim) as stored (their float32 values): codes (n, dim) int8 (per-row
    symmetric scale) and aux (n, 4) float32 = (scale, scale * L1(codes) / 2, L2(scale * codes),
    L2(x - scale * codes)), the norms in float64 rounded up (ragcore/dense.hpp; computed in C++)."""
    n, dim = x.shape
    if x.dtype == np.float32 and x.flags.c_contiguous:
        return _core.dense_prefilter_codes(x, threads)
    codes = np.empty((n, dim), np.int8)
    aux = np.empty((n, 4), np.float32)
    step = max(1, (1 << 24) // max(dim, 1))  # float16 rows: converted 64 MiB at a time
    for b in range(0, n, step):
        codes[b: b + step], aux[b: b + step] = _core.dense_prefilter_codes(
            np.ascontiguousarray(x[b: b + step], np.float32), threads)
    return codes, aux


def _quantise_int8(x: np.ndarray):
    """Per-row symmetric int8: (codes (n, dim) int8, aux (n, 2) float32 = (scale, L1 of the codes))."""
    amax = np.abs(x).max(axis=1) if x.size else np.zeros(x.shape[0], np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    l1 = np.abs(codes.astype(np.int32)).sum(axis=1, dtype=np.int64).astype(np.float32)
    return codes, np.ascontiguousarray(np.stack([scale, l1], axis=1))


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


def _row_limit(metric: str) -> float:
    """The largest |component| a loaded row may have: a cosine row is unit length (1, with room for
    rounding); an inner-product row's norm is at most 1e18 (what add() takes), so each component is
    (the norm itself is checked by _check_ip_norms)."""
    return 1.0001 if metric == "cosine" else _IP_MAX_NORM


def _check_ip_norms(vec: np.ndarray, aux: Optional[np.ndarray], what: str, why: str, slack: float = 0.0,
                    chunk: int = 8192) -> None:
    """Inner-product rows (added, queried or loaded; int8 codes with their ``aux`` scales): L2 norm at most
    1e18 * (1 + slack), so that |q . r| <= |q| |r| (and every partial sum) stays far below float32's
    maximum, where an overflow to inf would outrank every finite score. In chunks of rows (bounded
    memory); ``ValueError("<what> row <r> has L2 norm ..., above 1e18: <why>")``."""
    for start in range(0, vec.shape[0], chunk):
        block = vec[start:start + chunk]
        if aux is None:
            norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        else:  # int8 codes times their row's scale
            sq = np.einsum("ij,ij->i", block, block, dtype=np.int64)
            norms = np.sqrt(sq.astype(np.float64)) * aux[start:start + chunk, 0].astype(np.float64)
        bad = ~(norms <= _IP_MAX_NORM * (1 + slack))
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what} row {start + r} has L2 norm {norms[r]:.3g}, above {_IP_MAX_NORM:g}: {why}")


def _f16_bits_below(limit: float) -> int:
    """The bits of the largest float16 <= limit (65504 at most)."""
    h = np.float16(min(limit, _F16_MAX))
    if float(h) > limit:
        h = np.nextafter(h, np.float16(0))
    return int(np.array(h).view(np.uint16))


def _check_prefilter(prefilter: Optional[str], dtype: str, device: str) -> None:
    if prefilter is None:
        return
    if prefilter != "int8":
        raise ValueError(f"prefilter must be None or 'int8', got {prefilter!r}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"prefilter='int8' is for float32 or float16 rows, not dtype={dtype!r}")
    if device == "cuda":
        raise ValueError("prefilter='int8' is a CPU feature: use device='cpu' (or 'auto')")


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
        """Number of live (not deleted) vectors."""
        v = self._view
        return v.n - v.n_deleted

    @property
    def ntotal(self) -> int:
        """Rows stored, deleted ones included (row indices run from 0 to ntotal - 1)."""
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
    def search(self, queries: Any, k: int = 10, *, threads: Optional[int] = None) -> Hits:
        """Top-k rows for one query (dim,) or a batch (nq, dim) of float vectors.

        Parameters
        ----------
        k : int, default 10
            Results per query, capped at the number of live rows (at least 1): an index of 5 live rows
            gives 5 columns for ``k=10``; an empty one pads with index -1 and score -inf.
        threads : int, optional
            CPU threads (default: all cores). One query is split over the rows; a batch over queries.

        Returns
        -------
        Hits
            ``indices`` (row numbers, int64) and ``scores`` (float32) of shape (nq, min(k, live rows)), best first,
            ties to the lower row; ``ids`` when the index has ids. On a GPU index, CuPy (or any
            ``__cuda_array_interface__``) queries give CuPy results without a host round trip.
        """
        k = _check_k(k)
        nt = _ALL_THREADS if threads is None else _threads(threads)
        v = self._view  # one snapshot from start to end
        k = min(k, max(v.n - v.n_deleted, 1))  # capped at the live rows: k=10**9 must not allocate 12 GB
        if self._store is not None:
            with self._lock:  # the GPU store changes in place: searches and writes take turns
                return self._search_cuda(queries, k)
        q = self._prepare(queries, "queries")
        idx, scores = _core.dense_search(v.data, v.aux, v.deleted, q, k, nt, v.pre, v.pre_aux)
        return Hits(idx, scores, v.ids)

    def _search_cuda(self, queries: Any, k: int) -> Hits:
        if k > 1024:
            raise ValueError(f"k must be <= 1024 on the GPU, got {k}")
        if _is_cuda_array(queries):
            import cupy as cp  # a CUDA array without CuPy installed is the caller's own: ask for CuPy

            q = cp.asarray(queries)
            if q.dtype != cp.float32:
                raise TypeError(f"queries have dtype {q.dtype}, expected float32")
            if q.ndim == 1:
                q = q.reshape(1, -1)
            if q.ndim != 2 or q.shape[1] != self.dim:
                raise ValueError(f"queries must have shape (nq, {self.dim}), got {tuple(q.shape)}")
            if not q.flags.c_contiguous:
                raise ValueError("queries are not C-contiguous: pass cupy.ascontiguousarray(...)")
            if not bool(cp.isfinite(q).all()):
                raise ValueError("queries have NaN or infinite values")
            if self.metric == "cosine":
                norms = cp.linalg.norm(q, axis=1, keepdims=True)
                if not bool((norms > 0).all()):
                    raise ValueError("a query has zero norm: its cosine is undefined")
                q = cp.ascontiguousarray(q / norms, dtype=cp.float32)
            nq = q.shape[0]
            idx = cp.empty((nq, k), cp.int64)
            scores = cp.empty((nq, k), cp.float32)
            stream = cp.cuda.get_current_stream().ptr
            self._store.search_device(q.data.ptr, nq, k, idx.data.ptr, scores.data.ptr, stream)
            return Hits(idx, scores, self.ids)
        q = self._prepare(queries, "queries")
        idx, scores = self._store.search(q, k)
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
        if host is not None:
            dtype, aux = self.dtype, None  # float32 rows, exact in the store's dtype
            if dtype == "bfloat16":  # the upper halves of the float32 bits, which bfloat16 holds exactly
                data = (host.view(np.uint32) >> 16).astype(np.uint16)
            else:
                data = host.astype(np.float16) if dtype == "float16" else host
        else:
            data, aux, dtype = v.data, v.aux, self.dtype
        arrays = {"vectors": np.asarray(data)}
        if aux is not None:
            arrays["aux"] = np.asarray(aux)
        if v.pre is not None:
            arrays["pre_codes"], arrays["pre_aux"] = np.asarray(v.pre), np.asarray(v.pre_aux)
        if v.deleted is not None:
            arrays["deleted"] = np.asarray(v.deleted)
        try:
            json.dumps(self.info)
        except (TypeError, ValueError) as e:
            raise ValueError(f"index.info must be JSON-serialisable: {e}") from None
        meta = {"dim": self.dim, "metric": self.metric, "dtype": dtype, "n": v.n, "ids": None,
                "info": self.info, "prefilter": prefilter}
        if v.ids is not None:
            if v.ids.dtype == object:
                data_s, offsets = storage.encode_strings(v.ids.tolist())
                arrays["ids_data"], arrays["ids_offsets"] = data_s, offsets
                meta["ids"] = "str"
            else:
                arrays["ids_int"] = np.asarray(v.ids)
                meta["ids"] = "int"
        storage.save_index(path, _KIND, meta, arrays)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True,
             device: str = "auto") -> "DenseIndex":
        """Load an index saved by :meth:`save` (``mmap``: map the rows from disk, no copy; an
        ``add`` copies them into memory first). ``device`` as in the constructor; ``"auto"`` keeps an
        index with an int8 prefilter on the CPU, and ``device="cuda"`` loads its float rows only. A
        bfloat16 index (saved from the GPU) loads on the CPU as float32, exactly."""
        manifest, arrays = storage.load_index(path, kind=_KIND, mmap=mmap, verify=verify)
        try:
            meta = manifest["meta"]
            dim, n, dtype = int(meta["dim"]), int(meta["n"]), meta["dtype"]
            prefilter = meta.get("prefilter")
            if device == "auto":
                device = "cpu" if dtype == "int8" or prefilter or not cuda_available() else "cuda"
            # bfloat16 rows (saved from the GPU) load on the CPU as float32, exactly
            obj = cls(dim, metric=meta["metric"], dtype="float32" if dtype == "bfloat16" and device == "cpu" else dtype,
                      device=device)
            if obj.device == "cuda":  # the GPU scans the float rows (the codes are a CPU scan's shortcut)
                prefilter = None
            _check_prefilter(prefilter, dtype, obj.device)
            pre, pre_aux = arrays.get("pre_codes"), arrays.get("pre_aux")
            if prefilter is not None and (pre is None or pre.dtype != np.int8 or pre.shape != (n, dim)
                                          or pre_aux is None or pre_aux.dtype != np.float32
                                          or pre_aux.shape != (n, 4)):
                raise ValueError(f"an int8 prefilter without its (n, {dim}) int8 codes and (n, 4) float32 aux")
            vec = arrays["vectors"]
            want = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "bfloat16": np.uint16}[dtype]
            if vec.dtype != want or vec.shape != (n, dim):
                raise ValueError(f"vectors have dtype {vec.dtype} and shape {vec.shape}, expected "
                                 f"{np.dtype(want)} and {(n, dim)}")
            if dtype == "bfloat16":
                vec = (vec.astype(np.uint32) << 16).view(np.float32)
            aux = arrays.get("aux")
            if dtype == "int8" and (aux is None or aux.shape != (n, 2) or aux.dtype != np.float32):
                raise ValueError("int8 vectors without their (n, 2) float32 scales")
            dele = arrays.get("deleted")
            if dele is not None and (dele.shape != (n,) or dele.dtype != np.uint8):
                raise ValueError("the deleted mask must be uint8 (n,)")
            limit = _row_limit(meta["metric"])
            _core.dense_validate(vec, aux, *((pre, pre_aux) if prefilter is not None else (None, None)),
                                 max_abs=limit, max_abs_f16=_f16_bits_below(limit))  # finite, bounded rows, ...
            if meta["metric"] == "ip" and dtype != "float16":  # float16 rows: |x| <= 65504 keeps norms far below
                _check_ip_norms(vec, aux, "corrupt index: vectors", "metric='ip': add() refuses such rows",
                                slack=1e-6)  # int8 rows: their dequantised norm is rounded
            ids = None
            if meta["ids"] == "str":
                ids = np.empty(n, dtype=object)
                ids[:] = storage.decode_strings(arrays["ids_data"], arrays["ids_offsets"])
            elif meta["ids"] == "int":
                ids = np.asarray(arrays["ids_int"])
                if ids.shape != (n,):
                    raise ValueError(f"ids_int has shape {ids.shape}, expected ({n},)")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{os.fspath(path)!r} is not a valid dense index: {e}") from e
        if obj._store is not None:
            obj._store.add(np.ascontiguousarray(vec, dtype=np.float32))
        else:
            obj._data = vec
            obj._aux = aux
            if prefilter is not None:
                obj._pre, obj._pre_aux, obj.prefilter = pre, pre_aux, prefilter
        obj._n = n
        obj._ids = ids
        obj.info = dict(meta.get("info") or {})
        if dele is not None:
            obj._deleted = dele if obj._store is None else np.array(dele)
            obj._n_deleted = int(np.count_nonzero(dele))
            if obj._store is not None and obj._n_deleted:
                obj._store.set_deleted(np.flatnonzero(dele).astype(np.int64))
        obj._publish()
        return obj


def load(path: Union[str, os.PathLike], *, mmap: bool = True, verify: bool = True, device: str = "auto") -> DenseIndex:
    """Load a saved :class:`DenseIndex`."""
    return DenseIndex.load(path, mmap=mmap, verify=verify, device=device)

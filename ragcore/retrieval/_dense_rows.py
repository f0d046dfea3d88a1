"""Rows of a DenseIndex: validation of float vectors, cosine normalisation, int8 quantisation, the int8
prefilter's codes, and the bounds a stored row must keep (what add() refuses and load() checks).

Private helpers of :mod:`ragcore.retrieval.dense` (see its module docstring for the storage types).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _core
from .._validate import ALL_THREADS as _ALL_THREADS
from .hits import _is_cuda_array

_F16_MAX = 65504.0
_IP_MAX_NORM = 1e18


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


def _cuda_queries(queries: Any, dim: int, metric: str) -> Any:
    """Validate device (CuPy) queries for a GPU index -> CuPy float32 (nq, dim), C-contiguous, normalised
    for cosine. A CUDA array without CuPy installed is the caller's own: ``import cupy`` says to install it."""
    import cupy as cp

    q = cp.asarray(queries)
    if q.dtype != cp.float32:
        raise TypeError(f"queries have dtype {q.dtype}, expected float32")
    if q.ndim == 1:
        q = q.reshape(1, -1)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (nq, {dim}), got {tuple(q.shape)}")
    if not q.flags.c_contiguous:
        raise ValueError("queries are not C-contiguous: pass cupy.ascontiguousarray(...)")
    if not bool(cp.isfinite(q).all()):
        raise ValueError("queries have NaN or infinite values")
    if metric == "cosine":
        norms = cp.linalg.norm(q, axis=1, keepdims=True)
        if not bool((norms > 0).all()):
            raise ValueError("a query has zero norm: its cosine is undefined")
        q = cp.ascontiguousarray(q / norms, dtype=cp.float32)
    return q

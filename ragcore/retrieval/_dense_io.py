"""The saved form of a DenseIndex: what :meth:`DenseIndex.save` writes and :meth:`DenseIndex.load` checks.

A directory (``ragcore.io.storage``): the rows (``vectors``: float32, float16, int8 with ``aux`` scales,
or bfloat16 bits as uint16), the int8 prefilter (``pre_codes``, ``pre_aux``) when there is one, the
deleted mask (uint8) when rows were deleted, and the ids (int64, or strings). Private.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from .. import _core
from ..io import storage
from ._dense_rows import _check_ip_norms, _check_prefilter, _f16_bits_below, _row_limit

KIND = "dense"


def save(path: Union[str, os.PathLike], *, dim: int, metric: str, dtype: str, view: Any, prefilter: Optional[str],
         host: Optional[np.ndarray], info: Dict[str, Any]) -> None:
    """Write one snapshot (``view``: the index's ``_View``; ``host``: the GPU store's rows as float32,
    or None for a CPU index) atomically to ``path``."""
    v = view
    if host is not None:
        aux = None  # float32 rows, exact in the store's dtype
        if dtype == "bfloat16":  # the upper halves of the float32 bits, which bfloat16 holds exactly
            data = (host.view(np.uint32) >> 16).astype(np.uint16)
        else:
            data = host.astype(np.float16) if dtype == "float16" else host
    else:
        data, aux = v.data, v.aux
    arrays = {"vectors": np.asarray(data)}
    if aux is not None:
        arrays["aux"] = np.asarray(aux)
    if v.pre is not None:
        arrays["pre_codes"], arrays["pre_aux"] = np.asarray(v.pre), np.asarray(v.pre_aux)
    if v.deleted is not None:
        arrays["deleted"] = np.asarray(v.deleted)
    try:
        json.dumps(info)
    except (TypeError, ValueError) as e:
        raise ValueError(f"index.info must be JSON-serialisable: {e}") from None
    meta = {"dim": dim, "metric": metric, "dtype": dtype, "n": v.n, "ids": None, "info": info,
            "prefilter": prefilter}
    if v.ids is not None:
        if v.ids.dtype == object:
            data_s, offsets = storage.encode_strings(v.ids.tolist())
            arrays["ids_data"], arrays["ids_offsets"] = data_s, offsets
            meta["ids"] = "str"
        else:
            arrays["ids_int"] = np.asarray(v.ids)
            meta["ids"] = "int"
    storage.save_index(path, KIND, meta, arrays)


def load(cls: type, path: Union[str, os.PathLike], *, mmap: bool, verify: bool, device: str,
         cuda_available: Callable[[], bool]) -> Any:
    """Read and check a saved index, then make a ``cls`` (DenseIndex) holding it (see DenseIndex.load)."""
    manifest, arrays = storage.load_index(path, kind=KIND, mmap=mmap, verify=verify)
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
    obj._adopt(vec, aux, (pre, pre_aux) if prefilter is not None else None, ids, dele, dict(meta.get("info") or {}))
    return obj

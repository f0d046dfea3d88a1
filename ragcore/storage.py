"""The on-disk index format.

An index is a directory holding ``manifest.json`` and one flat, headerless, little-endian, C-order
raw file per array (``<name>.bin``), so every array loads with :class:`numpy.memmap` without
parsing. The manifest records the format and its version, the index kind (``"bm25"``, ``"tfidf"``,
...), the caller's parameters (``meta``) and, per array, its file, dtype, shape, size in bytes and
CRC-32. Saving writes into a temporary sibling directory, fsyncs it and renames it into place, so a
crash never leaves a half-written index. Nothing is ever pickled.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from ragcore.storage import save_index, load_index, encode_strings, decode_strings
>>> path = os.path.join(tempfile.mkdtemp(), "my-index")
>>> data, offsets = encode_strings(["doc-1", "doc-2"])
>>> save_index(path, "bm25", {"k1": 1.5}, {"doc_ids": data, "doc_id_offsets": offsets,
...                                         "tf": np.array([1, 2, 3], dtype=np.uint32)})
>>> manifest, arrays = load_index(path, kind="bm25")
>>> manifest["meta"]["k1"], arrays["tf"].tolist()
(1.5, [1, 2, 3])
>>> decode_strings(arrays["doc_ids"], arrays["doc_id_offsets"])
['doc-1', 'doc-2']
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "save_index", "load_index", "encode_strings", "decode_strings",
           "finish_export", "staged_export", "check_export_target",
           "write_export_config"]

FORMAT = "ragcore-index"
FORMAT_VERSION = 1

_MANIFEST = "manifest.json"
_CHUNK = 1 << 24  # 16 MiB: unit of writing and checksumming
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ALLOWED_KINDS = "biufc"  # bool, signed, unsigned, float, complex


def _ragcore_version() -> Optional[str]:
    """The version of the imported ``ragcore`` package, or None (never imports it)."""
    version = getattr(sys.modules.get("ragcore"), "__version__", None)
    return version if isinstance(version, str) else None


def _crc32_buffer(buf: memoryview) -> int:
    crc = 0
    for start in range(0, len(buf), _CHUNK):
        crc = zlib.crc32(buf[start:start + _CHUNK], crc)
    return crc


def _crc32_file(path: Path, nbytes: int) -> int:
    crc = 0
    buf = bytearray(min(_CHUNK, max(nbytes, 1)))
    view = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return crc
            crc = zlib.crc32(view[:n], crc)


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_manifest(path: Path) -> Any:
    with open(path / _MANIFEST, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def _is_replaceable(path: Path) -> bool:
    """True when ``path`` is an empty directory or a ragcore index (safe to replace)."""
    if not any(path.iterdir()):
        return True
    try:
        manifest = _read_manifest(path)
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _prepare_array(name: Any, array: Any) -> np.ndarray:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"array name {name!r} is not a simple identifier (letters, digits, '_', "
                         "not starting with a digit, at most 128 characters)")
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array {name!r} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype.kind not in _ALLOWED_KINDS or array.dtype.fields is not None:
        raise TypeError(f"array {name!r} has dtype {array.dtype}; only bool, integer, float and "
                        "complex dtypes can be stored")
    # The one documented copy: byte-swap to little-endian and make C-contiguous if needed.
    # (np.ascontiguousarray would turn 0-d arrays into 1-d ones.)
    return np.require(array.astype(array.dtype.newbyteorder("<"), copy=False), requirements="C")


def save_index(path: "str | os.PathLike[str]", kind: str, meta: Mapping[str, Any],
               arrays: Mapping[str, np.ndarray]) -> None:
    """Write an index directory atomically.

    Parameters
    ----------
    path : str or path-like
        The index directory. Missing parent directories are created. If ``path`` exists it must be
        an empty directory or a ragcore index, which is replaced; anything else is refused.
    kind : str
        What the index is (``"bm25"``, ``"tfidf"``, ``"dense"``, ...), checked by :func:`load_index`.
    meta : mapping
        JSON-serialisable parameters and counts, stored as ``manifest["meta"]``.
    arrays : mapping of str to numpy.ndarray
        Arrays to store, keyed by simple identifiers. Bool, integer, float and complex dtypes of any
        shape (including 0-d and empty) are accepted; big-endian data is stored little-endian and
        non-contiguous arrays are copied to C order.

    Raises
    ------
    ValueError
        Bad array name, names equal up to case, empty ``kind``, non-finite floats in ``meta``, or
        ``path`` exists and is not an empty directory or a ragcore index.
    TypeError
        ``kind`` not a string, ``meta`` not JSON-serialisable, an array that is not an ndarray or
        has a non-numeric dtype (object, string, structured, datetime).
    OSError
        Writing failed. The temporary directory is removed and an index already at ``path`` is
        left untouched.
    """
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    if not kind:
        raise ValueError("kind must be a non-empty string")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        meta = json.loads(json.dumps(dict(meta), allow_nan=False))
    except ValueError as e:
        raise ValueError(f"meta is not valid JSON (NaN or infinity?): {e}") from None
    except TypeError as e:
        raise TypeError(f"meta is not JSON-serialisable: {e}") from None
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a dict of name -> ndarray, got {type(arrays).__name__}")
    prepared = {name: _prepare_array(name, a) for name, a in arrays.items()}
    lowered: Dict[str, str] = {}
    for name in prepared:  # file names must not collide on case-insensitive file systems
        if name.lower() in lowered:
            raise ValueError(f"array names {lowered[name.lower()]!r} and {name!r} differ only in case")
        lowered[name.lower()] = name

    path = Path(os.path.abspath(os.fspath(path)))
    if not path.name:
        raise ValueError(f"cannot save an index at {str(path)!r}")
    if path.exists() and (not path.is_dir() or not _is_replaceable(path)):
        raise ValueError(f"{path} exists and is not a ragcore index or an empty directory; "
                         "refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        files: Dict[str, Dict[str, Any]] = {}
        for name, array in prepared.items():
            raw = memoryview(array.reshape(-1).view(np.uint8))
            crc = 0
            with open(tmp / f"{name}.bin", "wb") as f:
                for start in range(0, len(raw), _CHUNK):
                    chunk = raw[start:start + _CHUNK]
                    f.write(chunk)
                    crc = zlib.crc32(chunk, crc)
                f.flush()
                os.fsync(f.fileno())
            files[name] = {"file": f"{name}.bin", "dtype": array.dtype.str,
                           "shape": [int(d) for d in array.shape], "bytes": len(raw), "crc32": crc}
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                    "ragcore_version": _ragcore_version(), "created": created, "meta": meta,
                    "files": files}
        with open(tmp / _MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def _move_into_place(tmp: Path, path: Path) -> None:
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if not path.is_dir() or not _is_replaceable(path):  # re-checked: it may have changed meanwhile
        raise ValueError(f"{path} exists and is not a ragcore index or an empty directory; "
                         "refusing to overwrite it")
    _swap(tmp, path)


def _swap(tmp: Path, path: Path) -> None:
    """Replace the directory ``path`` by ``tmp``: the old one is renamed aside first and restored if the
    second rename fails, so ``path`` always holds a complete directory."""
    old = path.parent / f".{path.name}.old-{secrets.token_hex(6)}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_entry(path: Path, name: Any, entry: Any) -> Tuple[str, np.dtype, Tuple[int, ...], int, Any]:
    where = f"{path}: manifest entry {name!r}"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not isinstance(entry, dict):
        raise ValueError(f"{where} is malformed")
    if entry.get("file") != f"{name}.bin":
        raise ValueError(f"{where}: file is {entry.get('file')!r}, expected {name + '.bin'!r}")
    try:
        dtype = np.dtype(entry.get("dtype"))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: unknown dtype {entry.get('dtype')!r}") from None
    if (dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.str[0] == ">"
            or not isinstance(entry.get("dtype"), str)):
        raise ValueError(f"{where}: dtype {entry.get('dtype')!r} is not a little-endian numeric dtype")
    shape, nbytes = entry.get("shape"), entry.get("bytes")
    if (not isinstance(shape, list) or
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ValueError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not isinstance(nbytes, int) or isinstance(nbytes, bool):
        raise ValueError(f"{where}: bytes {nbytes!r} is not an integer")
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes != expected:
        raise ValueError(f"{where}: {nbytes} bytes is inconsistent with dtype {dtype.str} and shape "
                         f"{tuple(shape)} (expected {expected} bytes)")
    return entry["file"], dtype, tuple(shape), nbytes, entry.get("crc32")


def read_manifest(path: "str | os.PathLike[str]") -> Dict[str, Any]:
    """The validated ``manifest.json`` of an index directory (format and version checked).

    Raises
    ------
    ValueError
        ``path`` is not a ragcore index, or was written by a newer format version.
    """
    path = Path(os.fspath(path))
    if not path.is_dir():
        what = "does not exist" if not os.path.lexists(path) else "is not a directory"
        raise ValueError(f"{path} is not a ragcore index: it {what}")
    if not (path / _MANIFEST).is_file():
        raise ValueError(f"{path} is not a ragcore index: it has no {_MANIFEST}")
    try:
        manifest = _read_manifest(path)
    except ValueError as e:
        raise ValueError(f"{path} is not a ragcore index: {_MANIFEST} is not valid JSON ({e})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{path} is not a ragcore index: {_MANIFEST} has format {fmt!r}, "
                         f"expected {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version}, but this ragcore reads versions up "
                         f"to {FORMAT_VERSION}; upgrade ragcore to load it")
    return manifest


def load_index(path: "str | os.PathLike[str]", kind: Optional[str] = None, mmap: bool = True,
               verify: bool = True) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read an index directory written by :func:`save_index`.

    Parameters
    ----------
    path : str or path-like
        The index directory.
    kind : str, optional
        The expected kind; None accepts any kind.
    mmap : bool, default True
        Map the files read-only (:class:`numpy.memmap`, ``mode="r"``) instead of reading them
        into memory with :func:`numpy.fromfile`. Empty arrays are plain read-only ndarrays.
    verify : bool, default True
        Check each file's CRC-32 (streaming over the file in chunks when ``mmap`` is True).
        File sizes are always checked.

    Returns
    -------
    manifest : dict
        The parsed ``manifest.json`` (keys ``format``, ``format_version``, ``kind``,
        ``ragcore_version``, ``created``, ``meta``, ``files``).
    arrays : dict of str to numpy.ndarray
        The arrays, with their saved dtypes (little-endian) and shapes.

    Raises
    ------
    ValueError
        ``path`` is not a ragcore index (missing, not a directory, no or foreign ``manifest.json``),
        was written by a newer format version, is of another kind, or is corrupt: a file is
        missing, truncated, padded, fails its checksum, or its dtype and shape do not match its size.
        The message names the path and the actual and expected values.
    """
    path = Path(os.fspath(path))
    manifest = read_manifest(path)
    if kind is not None and manifest.get("kind") != kind:
        raise ValueError(f"{path} is a {manifest.get('kind')!r} index, expected {kind!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{path}: manifest 'files' is {type(files).__name__}, expected an object")

    arrays: Dict[str, np.ndarray] = {}
    for name, entry in files.items():
        fname, dtype, shape, nbytes, crc = _check_entry(path, name, entry)
        fpath = path / fname
        if not fpath.is_file():
            raise ValueError(f"{path} is corrupt: file {fname} is missing")
        size = fpath.stat().st_size
        if size != nbytes:
            how = "truncated" if size < nbytes else "padded"
            raise ValueError(f"{path} is corrupt: {fname} is {how} ({size} bytes, expected {nbytes})")
        if nbytes == 0:
            array = np.empty(shape, dtype=dtype)
            array.flags.writeable = not mmap
        elif mmap:
            if verify:
                _check_crc(path, fname, _crc32_file(fpath, nbytes), crc)
            array = np.memmap(fpath, dtype=dtype, mode="r", shape=shape)
        else:
            count = nbytes // dtype.itemsize
            array = np.fromfile(fpath, dtype=dtype, count=count)
            if array.size != count:
                raise ValueError(f"{path} is corrupt: {fname} is truncated "
                                 f"({array.size} items read, expected {count})")
            array = array.reshape(shape)
            if verify:
                _check_crc(path, fname, _crc32_buffer(memoryview(array.reshape(-1).view(np.uint8))), crc)
        if verify and nbytes == 0:
            _check_crc(path, fname, 0, crc)
        arrays[name] = array
    return manifest, arrays


def _check_crc(path: Path, fname: str, actual: int, expected: Any) -> None:
    if actual != expected:
        raise ValueError(f"{path} is corrupt: {fname} has CRC-32 {actual}, expected {expected!r}")


def encode_strings(strings: Iterable[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Pack strings into one UTF-8 byte array and an offsets array.

    Parameters
    ----------
    strings : iterable of str
        The strings (lone surrogates are kept, encoded with ``errors="surrogatepass"``).

    Returns
    -------
    data : numpy.ndarray of uint8, shape (total_bytes,)
        The concatenated UTF-8 encodings.
    offsets : numpy.ndarray of int64, shape (n + 1,)
        String ``i`` is ``data[offsets[i]:offsets[i + 1]]``; ``offsets[0] == 0``.

    Raises
    ------
    TypeError
        An element is not a str (the message names its position and type).
    """
    buf = bytearray()
    ends: List[int] = []
    for i, s in enumerate(strings):
        if not isinstance(s, str):
            raise TypeError(f"strings[{i}] must be a str, got {type(s).__name__}")
        buf += s.encode("utf-8", "surrogatepass")
        ends.append(len(buf))
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    offsets[1:] = ends
    return np.frombuffer(buf, dtype=np.uint8), offsets


def decode_strings(data: np.ndarray, offsets: np.ndarray) -> List[str]:
    """Unpack strings packed by :func:`encode_strings`.

    Parameters
    ----------
    data : numpy.ndarray of uint8, shape (total_bytes,)
    offsets : numpy.ndarray of integers, shape (n + 1,)
        Non-decreasing, from 0 to ``len(data)``.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        Wrong shapes, inconsistent offsets, or bytes that are not UTF-8.
    TypeError
        ``data`` is not uint8 or ``offsets`` is not an integer array.
    """
    data, offsets = np.asarray(data), np.asarray(offsets)
    if data.dtype != np.uint8:
        raise TypeError(f"data must have dtype uint8, got {data.dtype}")
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"offsets must have an integer dtype, got {offsets.dtype}")
    if data.ndim != 1 or offsets.ndim != 1 or offsets.size < 1:
        raise ValueError(f"data must have shape (total_bytes,) and offsets (n + 1,), got "
                         f"{data.shape} and {offsets.shape}")
    offs = offsets.tolist()
    if offs[0] != 0 or offs[-1] != data.size or any(a > b for a, b in zip(offs, offs[1:])):
        raise ValueError(f"offsets must be non-decreasing from 0 to len(data)={data.size}, "
                         f"got first {offs[0]} and last {offs[-1]}")
    raw = data.tobytes()
    out = []
    for i in range(len(offs) - 1):
        try:
            out.append(raw[offs[i]:offs[i + 1]].decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError as e:
            raise ValueError(f"string {i} is not valid UTF-8: {e}") from None
    return out


def check_export_target(out: Path, *, is_ours, what: str) -> None:
    """Raise ``ValueError`` unless ``out`` is absent, an empty directory or ``is_ours(out)``."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_ours(out))):
        raise ValueError(f"{out} exists and is not {what} or an empty directory; refusing to overwrite it")


def write_export_config(folder: Path, name: str, config: Dict[str, Any], versions: Iterable[str]) -> None:
    """Write a model folder's JSON config ``folder/name``: ``config`` plus the installed versions of the
    distributions ``versions`` and the creation time (UTC)."""
    from ._optional import dist_version
    config = dict(config, versions={d: dist_version(d) for d in versions},
                  created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (folder / name).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def staged_export(out: Path, *, cached: bool, is_ours, what: str) -> Iterator[Path]:
    """A model export's folder, written aside and moved into place only when complete.

    Yields a fresh temporary sibling of ``out`` (mode 0755: a shared cache stays readable); when the
    block ends normally the folder goes to ``out`` through :func:`finish_export`; when it raises
    (``KeyboardInterrupt`` included) the folder is deleted and nothing is left half-written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)   # mkdtemp's 0700 would hide a shared cache from other users
        yield tmp
        finish_export(tmp, out, cached=cached, is_ours=is_ours, what=what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finish_export(tmp: Path, out: Path, *, cached: bool, is_ours, what: str) -> None:
    """Make a model folder written in ``tmp`` (a sibling of ``out``) durable and move it to ``out``.

    Every file and the folder are fsynced, then renamed into place. An existing ``out`` is replaced
    only when it is empty or ``is_ours(out)`` (a folder of the same kind); anything else raises
    ``ValueError`` and is left untouched. ``cached``: a folder of the same kind already at ``out`` (a
    concurrent export of the same key) is kept and ``tmp`` dropped.
    """
    for f in tmp.iterdir():
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(tmp)
    try:
        os.rename(tmp, out)  # atomic when out is absent (or an empty directory, on POSIX)
    except OSError:
        if not out.exists():
            raise
        if cached and is_ours(out):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if not (out.is_dir() and (not any(out.iterdir()) or is_ours(out))):
            raise ValueError(f"{out} exists and is not {what} or an empty directory; refusing to overwrite it") from None
        _swap(tmp, out)
    _fsync_dir(out.parent)

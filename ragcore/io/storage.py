"""The on-disk index format.

An index is a directory holding ``manifest.json`` and one flat, headerless, little-endian, C-order
raw file per array (``<name>.bin``), so every array loads with ``mmap`` without parsing. The manifest
records the format and its version, the index kind (``"bm25"``, ``"tfidf"``, ``"dense"``, ...), the
caller's parameters (``meta``), per array its file, dtype, shape, size in bytes and CRC-32, and the
SHA-256 of its own content (``checksum``). Nothing is ever pickled.

Saving writes into a temporary sibling directory, fsyncs it and switches it in atomically
(``renameat2(RENAME_EXCHANGE)`` on Linux, a recoverable two-step elsewhere; see
:mod:`ragcore.io._dirswap`): after a crash, ``path`` holds the old or the new index, whole, and the
leftovers of dead writers are removed by the next save or load. A directory gets the mode the umask
gives (``0o777 & ~umask``; files ``0o666 & ~umask``); a re-save keeps the mode of the directory it
replaces.

Loading opens the directory once and reads the manifest and every file relative to that descriptor,
so a concurrent re-save cannot mix two versions (a load that meets one retries on the new one). The
manifest is always checked: its checksum, its structure, and the schema of its kind
(:mod:`ragcore.io._schema`: every ``meta`` field, the exact arrays with their dtypes and shapes). Mapped
arrays keep no file descriptor open.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from ragcore.io.storage import save_index, load_index, encode_strings, decode_strings
>>> path = os.path.join(tempfile.mkdtemp(), "my-index")
>>> data, offsets = encode_strings(["doc-1", "doc-2"])
>>> save_index(path, "example", {"k1": 1.5}, {"doc_ids": data, "doc_id_offsets": offsets,
...                                            "tf": np.array([1, 2, 3], dtype=np.uint32)})
>>> manifest, arrays = load_index(path, kind="example")
>>> manifest["meta"]["k1"], arrays["tf"].tolist()
(1.5, [1, 2, 3])
>>> decode_strings(arrays["doc_ids"], arrays["doc_id_offsets"])
['doc-1', 'doc-2']
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _dirswap, _fileio, _schema
from ._fileio import decode_strings, encode_strings

__all__ = ["FORMAT", "FORMAT_VERSION", "save_index", "load_index", "read_manifest", "seal_manifest",
           "encode_strings", "decode_strings"]

FORMAT = "ragcore-index"
#: 2: the manifest carries the SHA-256 of its own content and is validated against its kind's schema.
#: Version 1 indexes (no manifest checksum) are refused with a message to rebuild them.
FORMAT_VERSION = 2

_MANIFEST = "manifest.json"
_MANIFEST_KEYS = ("format", "format_version", "kind", "ragcore_version", "created", "meta", "files",
                  "checksum")
_MAX_MANIFEST_BYTES = 64 << 20   # a stopword list or an info dict, not data
_CHUNK = 1 << 24  # 16 MiB: unit of writing and checksumming
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: the dtype strings an array may have, exactly: never handed to np.dtype() unchecked
_DTYPES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8",
           "<c16")
_RETRIES = 8   # loads that meet a concurrent re-save (or a two-step swap in progress) start again


def _ragcore_version() -> Optional[str]:
    """The version of the imported ``ragcore`` package, or None (never imports it)."""
    version = getattr(sys.modules.get("ragcore"), "__version__", None)
    return version if isinstance(version, str) else None


def _crc32_buffer(buf: memoryview) -> int:
    crc = 0
    for start in range(0, len(buf), _CHUNK):
        crc = zlib.crc32(buf[start:start + _CHUNK], crc)
    return crc


_fsync_dir = _dirswap._fsync_dir


# ---- the manifest ----------------------------------------------------------------------------

def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def seal_manifest(manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """``manifest`` with its ``checksum`` (re)computed: ``"sha256:"`` and the hex SHA-256 of its content
    without the checksum, as JSON with sorted keys, no spaces and ASCII escapes. For tools and tests
    that edit a manifest on purpose; :func:`save_index` seals what it writes."""
    return dict(manifest, checksum="sha256:" + hashlib.sha256(_canonical(manifest)).hexdigest())


def _open_file(dirfd: int, name: str, where: str, problem: str) -> Tuple[int, int]:
    """(descriptor, size) of the regular file ``name`` in the directory ``dirfd``; a ValueError
    ``"<where> <problem>: ..."`` when it is missing or something else."""
    try:
        fd = _fileio.open_at(dirfd, name, where)
    except FileNotFoundError:
        raise ValueError(f"{where} {problem}: file {name} is missing") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError(f"{where} {problem}: {name} is not a regular file")
    return fd, st.st_size


def _read_manifest_at(dirfd: int, where: str) -> Dict[str, Any]:
    """The parsed, checksum-verified, structurally checked manifest of the directory ``dirfd``."""
    fd, size = _open_file(dirfd, _MANIFEST, where, "is not a ragcore index")
    try:
        if size > _MAX_MANIFEST_BYTES:
            raise ValueError(f"{where}/{_MANIFEST} is {size} bytes, more than a manifest's "
                             f"{_MAX_MANIFEST_BYTES}")
        buf = bytearray(size)
        raw = bytes(buf[:_fileio.read_fd(fd, memoryview(buf))])
    finally:
        os.close(fd)
    try:
        manifest = _fileio.parse_json(raw, f"{where}/{_MANIFEST}")
    except ValueError as e:
        raise ValueError(f"{where} is not a ragcore index: {e}") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{where} is not a ragcore index: {_MANIFEST} has format {fmt!r}, "
                         f"expected {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} has format version {version}, but this ragcore reads versions up "
                         f"to {FORMAT_VERSION}; upgrade ragcore to load it")
    if version < FORMAT_VERSION:
        raise ValueError(f"{where} has format version {version} (written by an older ragcore, without a "
                         f"manifest checksum); this ragcore reads version {FORMAT_VERSION}: rebuild the "
                         "index and save it with this version")
    actual = seal_manifest(manifest)["checksum"]
    if manifest.get("checksum") != actual:
        raise ValueError(f"{where}/{_MANIFEST} is corrupt or was edited: checksum "
                         f"{manifest.get('checksum')!r}, expected {actual!r} for its content")
    unknown = sorted(set(manifest) - set(_MANIFEST_KEYS))
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if unknown or missing:
        raise ValueError(f"{where}/{_MANIFEST} has " + (f"unknown key {unknown[0]!r}" if unknown else
                                                        f"no {missing[0]!r}"))
    for key, ok, expected in (
            ("kind", isinstance(manifest["kind"], str) and manifest["kind"], "a non-empty string"),
            ("ragcore_version", manifest["ragcore_version"] is None or isinstance(manifest["ragcore_version"], str),
             "a string or null"),
            ("created", isinstance(manifest["created"], str), "a string"),
            ("meta", isinstance(manifest["meta"], dict), "an object"),
            ("files", isinstance(manifest["files"], dict), "an object")):
        if not ok:
            raise ValueError(f"{where}/{_MANIFEST}: {key} is {manifest[key]!r}, expected {expected}")
    return manifest


_Entry = Tuple[str, np.dtype, Tuple[int, ...], int, int]


def _check_entry(where: str, name: Any, entry: Any) -> _Entry:
    where = f"{where}: manifest entry {name!r}"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not isinstance(entry, dict):
        raise ValueError(f"{where} is malformed")
    unknown = sorted(set(entry) - {"file", "dtype", "shape", "bytes", "crc32"})
    if unknown:
        raise ValueError(f"{where} has unknown key {unknown[0]!r}")
    if entry.get("file") != f"{name}.bin":
        raise ValueError(f"{where}: file is {entry.get('file')!r}, expected {name + '.bin'!r}")
    dt = entry.get("dtype")
    if not isinstance(dt, str) or dt not in _DTYPES:  # a whitelist: np.dtype() may parse (or eval) more
        raise ValueError(f"{where}: unknown dtype {dt!r}: not a little-endian numeric dtype "
                         f"(expected one of {', '.join(_DTYPES)})")
    dtype = np.dtype(dt)
    shape, nbytes, crc = entry.get("shape"), entry.get("bytes"), entry.get("crc32")
    if (not isinstance(shape, list) or len(shape) > 32 or
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ValueError(f"{where}: shape {shape!r} is not a list of at most 32 non-negative integers")
    if not isinstance(nbytes, int) or isinstance(nbytes, bool):
        raise ValueError(f"{where}: bytes {nbytes!r} is not an integer")
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes != expected:
        raise ValueError(f"{where}: {nbytes} bytes is inconsistent with dtype {dtype.str} and shape "
                         f"{tuple(shape)} (expected {expected} bytes)")
    if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc < 2 ** 32:
        raise ValueError(f"{where}: crc32 {crc!r} is not a CRC-32 (an integer in [0, 2**32))")
    return entry["file"], dtype, tuple(shape), nbytes, crc


def _validated_manifest(dirfd: int, where: str, kind: Optional[str]) -> Tuple[Dict[str, Any], Dict[str, _Entry]]:
    manifest = _read_manifest_at(dirfd, where)
    if kind is not None and manifest["kind"] != kind:
        raise ValueError(f"{where} is a {manifest['kind']!r} index, expected {kind!r}")
    entries = {name: _check_entry(where, name, e) for name, e in manifest["files"].items()}
    _schema.check_manifest(manifest, where=where)
    return manifest, entries


# ---- opening a directory -----------------------------------------------------------------------

def _open_dir(path: Path) -> int:
    """A descriptor of the directory ``path``: after a kill in a two-step swap, the index is put back
    first; while a live writer's two-step swap has it missing, wait a little."""
    for attempt in range(_RETRIES):
        try:
            return os.open(path, os.O_RDONLY | _fileio.O_DIRECTORY | _fileio.O_CLOEXEC | _fileio.O_NONBLOCK)
        except FileNotFoundError:
            if attempt + 1 < _RETRIES:
                if _dirswap.recover(path, _is_complete):
                    continue
                if _dirswap.live_writer(path):
                    time.sleep(0.002 * 2 ** attempt)
                    continue
            raise ValueError(f"{path} is not a ragcore index: it does not exist") from None
        except NotADirectoryError:
            raise ValueError(f"{path} is not a ragcore index: it is not a directory") from None
        except OSError as e:
            _fileio.check_fd_limit(e, str(path))
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _still_at(path: Path, dirfd: int) -> bool:
    """Whether ``path`` still names the directory open as ``dirfd`` (no swap since)."""
    try:
        a, b = os.stat(path), os.fstat(dirfd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _in_dir(path: Path, fn: Callable[[int], Any]) -> Any:
    """``fn(dirfd)`` on the directory ``path``; started again (a few times) when it raised ValueError
    and ``path`` no longer names that directory: a concurrent save switched in a new one, which is read
    whole instead of reporting a corruption that is not there."""
    for attempt in range(_RETRIES):
        fd = _open_dir(path)
        try:
            return fn(fd)
        except ValueError:
            if attempt + 1 < _RETRIES and not _still_at(path, fd):
                continue
            raise
        finally:
            os.close(fd)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_complete(path: Path) -> bool:
    """Whether the directory ``path`` holds a whole index (manifest, files and checksums verify)."""
    try:
        fd = os.open(path, os.O_RDONLY | _fileio.O_DIRECTORY | _fileio.O_CLOEXEC | _fileio.O_NONBLOCK)
    except OSError:
        return False
    try:
        _load_at(fd, str(path), None, mmap=True, verify=True)
        return True
    except (ValueError, OSError):
        return False
    finally:
        os.close(fd)


def _is_replaceable(path: Path) -> bool:
    """True when ``path`` is an empty directory or a ragcore index (of any version: safe to replace)."""
    if not any(path.iterdir()):
        return True
    try:
        with open(path / _MANIFEST, "rb") as f:
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
        manifest = _fileio.parse_json(raw, str(path / _MANIFEST))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


# ---- saving ------------------------------------------------------------------------------------

def _prepare_array(name: Any, array: Any) -> np.ndarray:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"array name {name!r} is not a simple identifier (letters, digits, '_', "
                         "not starting with a digit, at most 128 characters)")
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array {name!r} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype.fields is not None or array.dtype.newbyteorder("<").str not in _DTYPES:
        raise TypeError(f"array {name!r} has dtype {array.dtype}; only bool, integer, float (16, 32, "
                        "64 bits) and complex (64, 128 bits) dtypes can be stored")
    if array.ndim > 32:
        raise ValueError(f"array {name!r} has {array.ndim} dimensions; at most 32 can be stored")
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
        an empty directory or a ragcore index, which is replaced (keeping its mode); anything else
        is refused. A new directory gets ``0o777 & ~umask``, its files ``0o666 & ~umask``.
    kind : str
        What the index is (``"bm25"``, ``"tfidf"``, ``"dense"``, ...), checked by :func:`load_index`.
        The kinds of :data:`ragcore.io._schema.KINDS` must match their schema.
    meta : mapping
        JSON-serialisable parameters and counts (nested at most 62 levels), stored as
        ``manifest["meta"]``.
    arrays : mapping of str to numpy.ndarray
        Arrays to store, keyed by simple identifiers. Bool, integer, float (16, 32, 64 bits) and
        complex (64, 128 bits) dtypes of any shape (including 0-d and empty) are accepted; big-endian
        data is stored little-endian and non-contiguous arrays are copied to C order.

    Raises
    ------
    ValueError
        Bad array name, names equal up to case, empty ``kind``, non-finite floats in ``meta``, meta or
        arrays that do not match the schema of ``kind``, or ``path`` exists and is not an empty
        directory or a ragcore index.
    TypeError
        ``kind`` not a string, ``meta`` not JSON-serialisable, an array that is not an ndarray or
        has a dtype that cannot be stored (object, string, structured, datetime, long double).
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
        text = json.dumps(dict(meta), allow_nan=False)
        if _fileio.json_depth(text.encode("utf-8")) > _fileio.MAX_DEPTH - 2:
            raise ValueError(f"nested deeper than {_fileio.MAX_DEPTH - 2} levels")
        meta = json.loads(text)
    except RecursionError:
        raise ValueError(f"meta is nested deeper than {_fileio.MAX_DEPTH - 2} levels") from None
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
    where = str(path)
    _schema.check_meta(kind, meta, where=where)
    _schema.check_files(kind, meta, {n: (a.dtype.str, a.shape) for n, a in prepared.items()}, where=where)
    path.parent.mkdir(parents=True, exist_ok=True)
    _dirswap.recover(path, _is_complete)   # a kill in a two-step swap: the index back first
    if path.exists() and (not path.is_dir() or not _is_replaceable(path)):
        raise ValueError(f"{path} exists and is not a ragcore index or an empty directory; "
                         "refusing to overwrite it")

    tmp = _dirswap.make_temp_dir(path.parent, path.name)
    try:
        with contextlib.suppress(OSError):  # a re-save keeps the mode of the directory it replaces
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
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
            _dirswap.step("file-written")
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        manifest = seal_manifest({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                                  "ragcore_version": _ragcore_version(), "created": created,
                                  "meta": meta, "files": files})
        with open(tmp / _MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _dirswap.step("manifest-written")
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    _dirswap.clean(path)


def _move_into_place(tmp: Path, path: Path) -> None:
    if not os.path.lexists(path):
        try:
            os.rename(tmp, path)
            return
        except OSError as e:  # another writer got there first: replace its index like any other
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not os.path.lexists(path):
                raise
    if not path.is_dir() or not _is_replaceable(path):  # re-checked: it may have changed meanwhile
        raise ValueError(f"{path} exists and is not a ragcore index or an empty directory; "
                         "refusing to overwrite it")
    _dirswap.swap(tmp, path)


# ---- loading -----------------------------------------------------------------------------------

def _load_file(dirfd: int, where: str, entry: _Entry, mmap: bool, verify: bool) -> np.ndarray:
    fname, dtype, shape, nbytes, crc = entry
    fd, size = _open_file(dirfd, fname, where, "is corrupt")
    try:
        if size != nbytes:
            how = "truncated" if size < nbytes else "padded"
            raise ValueError(f"{where} is corrupt: {fname} is {how} ({size} bytes, expected {nbytes})")
        count = nbytes // dtype.itemsize
        if nbytes == 0:
            array = np.empty(shape, dtype=dtype)
            array.flags.writeable = not mmap
            raw = memoryview(b"")
        elif mmap:
            raw = _fileio.map_readonly(fd, nbytes, f"{where}/{fname}")
            array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape).view(np.memmap)
            array.filename, array.offset, array.mode = os.path.join(where, fname), 0, "r"
        else:
            array = np.empty(count, dtype=dtype)
            raw = memoryview(array.view(np.uint8))
            got = _fileio.read_fd(fd, raw)
            if got != nbytes:
                raise ValueError(f"{where} is corrupt: {fname} is truncated ({got} bytes read, "
                                 f"expected {nbytes})")
            array = array.reshape(shape)
    finally:
        os.close(fd)
    if verify:
        actual = _crc32_buffer(raw)
        if actual != crc:
            raise ValueError(f"{where} is corrupt: {fname} has CRC-32 {actual}, expected {crc!r}")
    return array


def _load_at(dirfd: int, where: str, kind: Optional[str], mmap: bool,
             verify: bool) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    manifest, entries = _validated_manifest(dirfd, where, kind)
    arrays = {name: _load_file(dirfd, where, e, mmap, verify) for name, e in entries.items()}
    _schema.check_arrays(manifest["kind"], manifest["meta"], arrays, where=where)
    return manifest, arrays


def read_manifest(path: "str | os.PathLike[str]") -> Dict[str, Any]:
    """The validated ``manifest.json`` of an index directory: format, version, checksum, structure
    and the schema of its kind checked (no array file is opened).

    Raises
    ------
    ValueError
        ``path`` is not a ragcore index, was written by another format version, or its manifest is
        corrupt, edited or inconsistent.
    """
    path = Path(os.fspath(path))
    return _in_dir(path, lambda fd: _validated_manifest(fd, str(path), None)[0])


def load_index(path: "str | os.PathLike[str]", kind: Optional[str] = None, mmap: bool = True,
               verify: bool = True) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read an index directory written by :func:`save_index`.

    The manifest and every file are read through one descriptor of the directory: a concurrent
    re-save of ``path`` gives the old or the new index, whole (the load starts again on the new one
    when the old one is removed under it). Leftovers of dead writers beside ``path`` are removed, and
    after a kill in a two-step swap the index is put back first.

    Parameters
    ----------
    path : str or path-like
        The index directory.
    kind : str, optional
        The expected kind; None accepts any kind. Whatever this is, a kind with a schema
        (:mod:`ragcore.io._schema`) is checked against it.
    mmap : bool, default True
        Map the files read-only (the arrays are :class:`numpy.memmap` views, not writeable, holding
        no file descriptor) instead of reading them into memory. Empty arrays are plain read-only
        ndarrays.
    verify : bool, default True
        Check each file's CRC-32 (reading it once). File sizes, the manifest's own checksum and its
        schema are always checked.

    Returns
    -------
    manifest : dict
        The parsed ``manifest.json`` (keys ``format``, ``format_version``, ``kind``,
        ``ragcore_version``, ``created``, ``meta``, ``files``, ``checksum``).
    arrays : dict of str to numpy.ndarray
        The arrays, with their saved dtypes (little-endian) and shapes.

    Raises
    ------
    ValueError
        ``path`` is not a ragcore index (missing, not a directory, no or foreign ``manifest.json``),
        was written by another format version, is of another kind, or is corrupt: an edited or
        damaged manifest (checksum, JSON nested too deeply, a field of the wrong type, value or
        count, an unknown dtype), a file missing, truncated, padded, failing its checksum, or its
        dtype and shape not matching its size. The message names the path, the file or field, and
        the actual and expected values.
    OSError
        Reading failed; out of file descriptors, the message names the limit.
    """
    path = Path(os.fspath(path))
    result = _in_dir(path, lambda fd: _load_at(fd, str(path), kind, mmap, verify))
    with contextlib.suppress(OSError):
        _dirswap.clean(path)
    return result

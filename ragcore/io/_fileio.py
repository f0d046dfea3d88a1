"""Reading the files of an index safely: JSON with bounded nesting and no ambiguity, files opened
relative to a directory descriptor (never blocking on a FIFO, naming the descriptor limit when it is
reached), and read-only mappings that hold no file descriptor."""
from __future__ import annotations

import ctypes
import errno
import json
import mmap as _mmap
import os
import re
import sys
import weakref
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

MAX_DEPTH = 64                  # JSON nesting: a manifest needs 4, a dense index's info a few more
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)   # a FIFO named like an array file must not block open()

JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (its strings ignored), without parsing."""
    a = np.frombuffer(JSON_STRING.sub(b'""', raw), np.uint8)
    if not a.size:
        return 0
    step = ((a == ord("[")) | (a == ord("{"))).astype(np.int32) - ((a == ord("]")) | (a == ord("}")))
    return int(np.cumsum(step).max())


def no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r}")
    return out


def no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def finite_float(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a double")
    return v


def parse_json(raw: bytes, where: str) -> Any:
    """Parse a manifest's bytes; any problem is a ValueError naming ``where`` (never RecursionError)."""
    if json_depth(raw) > MAX_DEPTH:
        raise ValueError(f"{where} is not valid JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates,
                          parse_constant=no_constant, parse_float=finite_float)
    except RecursionError:
        raise ValueError(f"{where} is not valid JSON: nested too deeply") from None
    except ValueError as e:   # UnicodeDecodeError and JSONDecodeError included
        raise ValueError(f"{where} is not valid JSON ({e})") from None


def open_at(dirfd: int, name: str, where: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | O_CLOEXEC | O_NONBLOCK, dir_fd=dirfd)
    except OSError as e:
        check_fd_limit(e, where)
        raise


def check_fd_limit(e: OSError, where: str) -> None:
    if e.errno in (errno.EMFILE, errno.ENFILE):
        try:
            import resource
            limit = f"its limit of {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} open files (RLIMIT_NOFILE, ulimit -n)"
        except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
            limit = "its limit of open files"
        who = "the system has" if e.errno == errno.ENFILE else "this process has"
        raise OSError(e.errno, f"cannot open a file of {where}: {who} reached {limit}; loaded indexes "
                               "keep no file open, so raise the limit or close other files") from e


def read_fd(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; the number of bytes read (less at end of file)."""
    done = 0
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        while done < len(view):
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
    return done


def c_mapper():
    """(mmap, munmap) of the C library, or None: a mapping made there keeps no file descriptor,
    where Python's mmap.mmap (before 3.13) keeps a duplicate of it for the mapping's lifetime."""
    if os.name != "posix" or sys.version_info >= (3, 13):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        c_mmap, c_munmap = libc.mmap, libc.munmap
    except (OSError, AttributeError):  # pragma: no cover
        return None
    c_mmap.restype = ctypes.c_void_p
    c_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_ssize_t]
    c_munmap.restype = ctypes.c_int
    c_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return c_mmap, c_munmap


C_MAPPER = c_mapper()
MAP_FAILED = ctypes.c_void_p(-1).value


def map_readonly(fd: int, nbytes: int, where: str) -> memoryview:
    """A read-only shared mapping of the first ``nbytes`` of ``fd``, holding no descriptor: the caller
    closes ``fd``; the mapping goes when the last array using it does."""
    if C_MAPPER is not None:
        c_mmap, c_munmap = C_MAPPER
        addr = c_mmap(None, nbytes, _mmap.PROT_READ, _mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot map {where}: {os.strerror(err)}")
        buf = (ctypes.c_ubyte * nbytes).from_address(addr)
        weakref.finalize(buf, c_munmap, addr, nbytes).atexit = False  # never under a running thread
        return memoryview(buf).toreadonly()
    if sys.version_info >= (3, 13):
        return memoryview(_mmap.mmap(fd, nbytes, access=_mmap.ACCESS_READ, trackfd=False))
    return memoryview(_mmap.mmap(fd, nbytes, access=_mmap.ACCESS_READ))  # pragma: no cover - Windows


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

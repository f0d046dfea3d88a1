"""Model folders (exported encoders and generators): where they are cached, how an export is staged and
moved into place, and how a folder from elsewhere is trusted.

The cache is ``$RAGCORE_CACHE``, else ``$XDG_CACHE_HOME/ragcore``, else ``~/.cache/ragcore``
(:func:`default_cache_dir`): ``encoders/`` and ``generators/`` hold one folder per exported model and
options, named by a hash of the source and the options, so a new export never overwrites an old one.

Model folders from elsewhere: names that stay inside the folder, and files that match their checksums.

A model folder's config names its files. Those names come from whoever made the folder, so they are
checked to be plain file names inside it (no absolute path, no ``..``, no directory part; a symbolic
link the folder itself holds is followed, as a shared weights file may be one), and
a file whose config records a sha256 is hashed before onnxruntime loads it: a tampered model is refused
instead of giving NaN embeddings silently. Hashing a few hundred MB takes a second, so a verified file is
remembered by (path, size, mtime, ctime, inode) in this process and in ``verified-files.json`` of the
model cache; the ctime changes with any write to the file (and with any attempt to restore its mtime),
so a changed file is hashed again.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

from . import _dirswap

__all__ = ["default_cache_dir", "member", "file_sha256", "files_sha256", "verify_sha256", "check_export_target",
           "write_export_config", "staged_export", "finish_export"]

_lock = threading.Lock()
_verified: Dict[str, Tuple[int, int, int, int, str]] = {}
_RECORD = "verified-files.json"


def default_cache_dir() -> Path:
    """``$RAGCORE_CACHE``, else ``$XDG_CACHE_HOME/ragcore``, else ``~/.cache/ragcore``."""
    if os.environ.get("RAGCORE_CACHE"):
        return Path(os.environ["RAGCORE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ragcore"


def member(folder: Path, name: object, what: str) -> Path:
    """``folder / name`` after checking that ``name`` is a plain file name that stays in ``folder``.

    Raises
    ------
    ValueError
        ``name`` is not a str, is absolute, or has a directory part or ``..``.
    """
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"{folder}: {what} names the file {name!r}, which is not a file name")
    if os.path.isabs(name) or os.path.basename(name) != name or "/" in name or "\\" in name:
        raise ValueError(f"{folder}: {what} names {name!r}, outside the folder; a model folder's files "
                         "must be plain names inside it")
    return folder / name


def _key(st: os.stat_result, digest: str) -> Tuple[int, int, int, int, str]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest)


def _record_path() -> Optional[Path]:
    try:
        return default_cache_dir() / _RECORD
    except Exception:  # pragma: no cover - no usable home directory
        return None


def _load_record(path: Optional[Path]) -> Dict[str, list]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_record(path: Optional[Path], record: Dict[str, list]) -> None:
    if path is None:
        return
    try:  # best effort: a read-only cache only costs a hash per process
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_RECORD}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _update(h: "hashlib._Hash", file: Path) -> None:
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def file_sha256(file: Path, framing: bytes = b"") -> str:
    """sha256 (hex) of ``framing + content + framing``."""
    h = hashlib.sha256(framing)
    _update(h, file)
    h.update(framing)
    return h.hexdigest()


def files_sha256(named: Iterable[Tuple[str, Path]], *, end: bytes = b"\0") -> str:
    """One sha256 (hex) over several files: per file ``name + NUL + content + end`` (a source's cache key)."""
    h = hashlib.sha256()
    for name, path in named:
        h.update(name.encode() + b"\0")
        _update(h, path)
        h.update(end)
    return h.hexdigest()


def verify_sha256(file: Path, expected: object, what: str, framing: bytes = b"") -> None:
    """Raise ``ValueError`` unless the sha256 of ``framing + file's bytes + framing`` is ``expected`` (hex);
    hashed once per file version. (Encoder folders record their models' hashes framed by NUL bytes.)"""
    if not isinstance(expected, str) or len(expected) != 64:
        raise ValueError(f"{file}: {what} records the sha256 {expected!r}, which is not a sha256")
    real = str(file.resolve())
    st = os.stat(real)
    key = _key(st, expected.lower())
    with _lock:
        if _verified.get(real) == key:
            return
    record_path = _record_path()
    record = _load_record(record_path)
    if tuple(record.get(real) or ()) == key:
        with _lock:
            _verified[real] = key
        return
    actual = file_sha256(Path(real), framing)
    if actual != expected.lower():
        raise ValueError(f"{file} is corrupt or was modified: sha256 {actual}, {what} records {expected}; "
                         "export it again")
    with _lock:
        _verified[real] = key
    record = _load_record(record_path)  # re-read: another process may have added entries meanwhile
    record[real] = list(key)
    _save_record(record_path, record)


def check_export_target(out: Path, *, is_ours, what: str) -> None:
    """Raise ``ValueError`` unless ``out`` is absent, an empty directory or ``is_ours(out)``."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_ours(out))):
        raise ValueError(f"{out} exists and is not {what} or an empty directory; refusing to overwrite it")


def write_export_config(folder: Path, name: str, config: Dict[str, Any], versions: Iterable[str]) -> None:
    """Write a model folder's JSON config ``folder/name``: ``config`` plus the installed versions of the
    distributions ``versions`` and the creation time (UTC)."""
    from .._optional import dist_version

    config = dict(config, versions={d: dist_version(d) for d in versions},
                  created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (folder / name).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def staged_export(out: Path, *, cached: bool, is_ours, what: str) -> Iterator[Path]:
    """A model export's folder, written aside and moved into place only when complete.

    Yields a fresh temporary sibling of ``out`` (mode ``0o777 & ~umask``, or the mode of the folder it
    replaces); when the block ends normally the folder goes to ``out`` through :func:`finish_export`;
    when it raises (``KeyboardInterrupt`` included) the folder is deleted and nothing is left
    half-written. Leftovers of dead exporters beside ``out`` are removed afterwards.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _dirswap.make_temp_dir(out.parent, out.name)
    try:
        with contextlib.suppress(OSError):  # re-exporting keeps the mode of the folder it replaces
            os.chmod(tmp, stat.S_IMODE(os.stat(out).st_mode))
        yield tmp
        finish_export(tmp, out, cached=cached, is_ours=is_ours, what=what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):
        _dirswap.clean(out)


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
    _dirswap._fsync_dir(tmp)
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
        _dirswap.swap(tmp, out)
    _dirswap._fsync_dir(out.parent)

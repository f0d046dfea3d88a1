"""Model folders from elsewhere: names that stay inside the folder, and files that match their checksums.

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

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

__all__ = ["member", "file_sha256", "verify_sha256"]

_lock = threading.Lock()
_verified: Dict[str, Tuple[int, int, int, int, str]] = {}
_RECORD = "verified-files.json"


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
        from ..models.encoder_export import default_cache_dir
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


def file_sha256(file: Path, framing: bytes = b"") -> str:
    """sha256 (hex) of ``framing + content + framing``."""
    h = hashlib.sha256(framing)
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    h.update(framing)
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

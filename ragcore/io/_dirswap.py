"""Atomic replacement of a directory, and the leftovers of interrupted replacements.

A new version of a directory ``path`` (an index, a model folder) is written into a temporary sibling
``.{name}.tmp-{tag}-{pid}-{random}`` and switched in by :func:`swap`:

- On Linux, ``renameat2(RENAME_EXCHANGE)`` swaps the two names in one atomic step: ``path`` holds the
  old or the new directory at every instant, whatever kills the process. The old directory (now at
  the temporary name) is removed afterwards.
- Where the kernel or the file system cannot exchange (another OS, NFS, ...: ``EINVAL`` / ``ENOSYS``),
  a recoverable two-step: the old directory is renamed aside to ``.{name}.old-{tag}-{pid}-{random}``,
  then the new one in. A kill between the two leaves no ``path`` but two complete directories, which
  :func:`recover` (called by every load and save) puts back.

Leftovers (``.{name}.tmp-*``, ``.{name}.old-*``) of writers that died are removed by :func:`clean`
(called by every save and load of ``path``). The rule: ``tag`` identifies the host and pid namespace
that wrote the name; a leftover of ours is stale as soon as its writer's ``pid`` is no longer running
(``os.kill(pid, 0)``); one from elsewhere (another machine or container sharing the file system, or
a name written before this scheme) is stale only after :data:`FOREIGN_STALE_S` seconds without a
modification in it. A live writer's directory is therefore never touched, and nothing of a dead one
stays for long. Directories are created with mode ``0o777`` so the kernel applies the umask.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import platform
import re
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

AT_FDCWD = -100
RENAME_EXCHANGE = 2
#: syscall numbers of renameat2, where glibc lacks the wrapper
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276, "riscv64": 276,
                  "ppc64le": 357, "ppc64": 357, "s390x": 347, "i686": 353, "i386": 353, "armv7l": 382}
#: seconds without modification after which a leftover of another host or pid namespace is stale
FOREIGN_STALE_S = 3600.0

#: test hook: called with the name of each step of a save ("file-written", "manifest-written",
#: "exchanged", "moved-aside", "moved-in", "removed"); tests kill the process there
_on_step: Optional[Callable[[str], None]] = None


def step(name: str) -> None:
    if _on_step is not None:
        _on_step(name)


def _owner_tag() -> str:
    """8 hex digits naming this host and pid namespace (a pid means something only within both)."""
    ns = ""
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pass
    return hashlib.sha256(f"{socket.gethostname()}\0{ns}".encode("utf-8", "replace")).hexdigest()[:8]


_TAG = _owner_tag()
# ours: what-tag-pid-random; before this scheme (exact formats only, so that a user's own
# ".name.old-backup" is never taken for one): tempfile.mkdtemp's 8 characters, or 12 hex digits
_LEFTOVER = re.compile(r"(?P<what>tmp|old)-(?:(?P<tag>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]+"
                       r"|(?<=tmp-)[a-z0-9_]{8}|(?<=old-)[0-9a-f]{12})")


def temp_name(name: str, what: str = "tmp") -> str:
    return f".{name}.{what}-{_TAG}-{os.getpid()}-{secrets.token_hex(4)}"


def make_temp_dir(parent: Path, name: str, what: str = "tmp") -> Path:
    """A new empty sibling directory for ``parent / name``, mode ``0o777 & ~umask``."""
    while True:
        p = parent / temp_name(name, what)
        try:
            os.mkdir(p, 0o777)   # the kernel applies the umask (mkdtemp's 0700 would ignore it)
            return p
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


# ---- renameat2 -------------------------------------------------------------------------------

def _find_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn
    nr = _SYS_RENAMEAT2.get(platform.machine())
    if nr is None:  # pragma: no cover
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    def via_syscall(olddirfd, old, newdirfd, new, flags):  # pragma: no cover - old glibc
        return syscall(ctypes.c_long(nr), ctypes.c_int(olddirfd), ctypes.c_char_p(old),
                       ctypes.c_int(newdirfd), ctypes.c_char_p(new), ctypes.c_uint(flags))
    return via_syscall


_renameat2 = _find_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically; False where the system cannot (nothing changed)."""
    global _renameat2
    if _renameat2 is None:
        return False
    rc = _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        _renameat2 = None   # the kernel has no renameat2: never again
        return False
    if err in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False        # this file system cannot exchange
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def swap(tmp: Path, path: Path) -> None:
    """Replace the directory ``path`` by ``tmp`` (a sibling); ``path`` always holds a complete one, or,
    only on systems without ``RENAME_EXCHANGE`` and after a kill, two complete siblings that
    :func:`recover` puts back."""
    if exchange(tmp, path):
        step("exchanged")
        _fsync_dir(path.parent)
        shutil.rmtree(tmp, ignore_errors=True)   # the old directory, now at the temporary name
        step("removed")
        return
    old = path.parent / temp_name(path.name, "old")
    os.rename(path, old)
    step("moved-aside")
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    step("moved-in")
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    step("removed")


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- leftovers -------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True    # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True    # someone else's process
    except (OverflowError, ValueError):
        return False
    return True


def _newest_mtime(p: Path) -> float:
    newest = 0.0
    try:
        newest = p.lstat().st_mtime
        with os.scandir(p) as it:
            for e in it:
                try:
                    newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
                except OSError:
                    pass
    except OSError:
        pass
    return newest


def leftovers(path: Path) -> List[Tuple[Path, str, bool]]:
    """The leftovers of ``path`` beside it: (path, "tmp" or "old", whether stale)."""
    prefix = f".{path.name}."
    out = []
    try:
        with os.scandir(path.parent) as it:
            names = [e.name for e in it if e.name.startswith(prefix)]
    except OSError:
        return out
    for name in names:
        m = _LEFTOVER.fullmatch(name[len(prefix):])
        if m is None:
            continue
        p = path.parent / name
        if m.group("tag") == _TAG:
            stale = not _pid_alive(int(m.group("pid")))
        else:
            stale = time.time() - _newest_mtime(p) > FOREIGN_STALE_S
        out.append((p, m.group("what"), stale))
    return out


def live_writer(path: Path) -> bool:
    """Whether a live writer has a directory beside ``path`` (a save of it may be under way)."""
    return any(not stale for _, _, stale in leftovers(path))


def recover(path: Path, is_complete: Callable[[Path], bool]) -> bool:
    """Where ``path`` is missing, move back the newest complete leftover of a dead writer (the two-step
    swap's old or new directory). True when ``path`` exists afterwards."""
    if os.path.lexists(path):
        return True
    candidates = []
    for p, what, stale in leftovers(path):
        if stale and is_complete(p):
            candidates.append((_newest_mtime(p), what == "tmp", p))
    for _, _, p in sorted(candidates, reverse=True):
        try:
            os.rename(p, path)   # never replaces a non-empty directory that appeared meanwhile
        except OSError:
            if os.path.lexists(path):
                return True
            continue
        _fsync_dir(path.parent)
        return True
    return os.path.lexists(path)


def clean(path: Path) -> None:
    """Remove the stale leftovers beside ``path`` (only while ``path`` exists: otherwise they may be
    what :func:`recover` needs)."""
    if not os.path.lexists(path):
        return
    for p, _, stale in leftovers(path):
        if stale:
            shutil.rmtree(p, ignore_errors=True)

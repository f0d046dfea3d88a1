"""Run pytest as if some optional packages were not installed.

    python tools/without.py onnxruntime,torch -- -q tests/test_encoder.py

``import MODULE`` (and ``import MODULE.sub``) raises ``ModuleNotFoundError`` (a meta path finder
put first) and ``importlib.util.find_spec("MODULE")`` returns None, in this process and in the Python
subprocesses the tests start (through a ``sitecustomize`` put first on ``PYTHONPATH``). Use it
to check that a missing optional dependency skips only the tests that need it. Installed
distributions' metadata (``importlib.metadata``) still shows the package.
"""
from __future__ import annotations

import os
import sys
import tempfile

ENV = "RAGCORE_WITHOUT"

# Blocks the modules named in $RAGCORE_WITHOUT; run here, and as sitecustomize.py in subprocesses.
_BLOCK = '''\
import importlib.util, os, sys


class _Blocker:
    """A meta path finder that refuses the blocked modules and their submodules."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by tools/without.py)", name=fullname)
        return None


def _install(names):
    # No None entries in sys.modules: some libraries (scipy's array API helpers) read sys.modules["torch"].
    blocker = _Blocker(n for n in names if n)
    for loaded in [m for m in sys.modules if m.partition(".")[0] in blocker.names]:
        del sys.modules[loaded]
    sys.meta_path.insert(0, blocker)
    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):  # an absent top-level module: None, as without the package
        if name in blocker.names:
            return None
        return real_find_spec(name, package)

    importlib.util.find_spec = find_spec


_install(os.environ.get("RAGCORE_WITHOUT", "").split(","))
'''

# The sitecustomize.py of the subprocesses: the blocker, then the sitecustomize it shadows, if any.
_BOOTSTRAP = _BLOCK + '''
import importlib.machinery, importlib.util

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if p and os.path.abspath(p) != _here])
if _spec is not None:  # chain to the sitecustomize this one shadows
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
'''


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    names = [n.strip() for n in argv[0].split(",") if n.strip()]
    rest = argv[1:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    boot = tempfile.mkdtemp(prefix="ragcore-without-")
    with open(os.path.join(boot, "sitecustomize.py"), "w") as f:
        f.write(_BOOTSTRAP)
    os.environ[ENV] = ",".join(names)
    os.environ["PYTHONPATH"] = os.pathsep.join([boot] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    # this process: the same blocker, then pytest as `python -m pytest` runs it (the cwd first on sys.path)
    exec(compile(_BLOCK, "ragcore-without", "exec"), {"__name__": "_ragcore_without"})
    sys.path[0] = os.getcwd()
    import pytest

    try:
        return pytest.main(rest)
    finally:
        import shutil

        shutil.rmtree(boot, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

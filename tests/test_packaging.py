"""The front door: `ragcore --version`, and the message when the compiled extension is missing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ragcore as rc
from ragcore.cli import main

ROOT = Path(rc.__file__).resolve().parent


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"ragcore {rc.__version__}"
    assert "model cache:" in out and "dense kernels:" in out


def test_version_matches_metadata():
    from importlib.metadata import PackageNotFoundError, version

    try:
        assert version("ragcore") == rc.__version__
    except PackageNotFoundError:
        pytest.skip("ragcore is not installed (run from a source tree)")


def _copy_package(dst: Path, with_core: bool) -> Path:
    pkg = dst / "ragcore"
    shutil.copytree(ROOT, pkg, ignore=shutil.ignore_patterns("__pycache__", *([] if with_core else ["_core.*", "_cuda.*"])))
    return pkg


@pytest.mark.parametrize("clone", [True, False])
def test_missing_extension_says_what_to_do(tmp_path, clone):
    _copy_package(tmp_path, with_core=False)
    if clone:
        (tmp_path / "CMakeLists.txt").write_text("# a source checkout\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))  # -S: no site-packages, so no installed ragcore either
    r = subprocess.run([sys.executable, "-S", "-c", "import ragcore"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "circular import" not in last
    assert "ragcore._core" in last and "is not built" in last
    assert ("pip install -e ." in last) == clone


def test_broken_extension_names_the_file(tmp_path):
    pkg = _copy_package(tmp_path, with_core=False)
    core = Path(rc._core.__file__)   # beside the sources, or elsewhere (an editable scikit-build-core install)
    (pkg / core.name).write_bytes(b"not a shared object")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))  # -S: no site-packages, so no installed ragcore either
    r = subprocess.run([sys.executable, "-S", "-c", "import ragcore"], cwd=tmp_path, env=env, capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and core.name in last and "failed to load" in last

"""Thin CMake driver: builds the private extensions ``ragcore._core`` and, with a CUDA compiler,
``ragcore._cuda`` with CMake (+ Ninja), in one CMake run.

Environment knobs: RAGCORE_BUILD_TYPE (default Release), RAGCORE_CUDA=ON|OFF|AUTO (default AUTO: the
CUDA module is built when nvcc is found, and its absence is not an error), RAGCORE_SANITIZE (e.g.
``address,undefined``: _core built with those sanitizers, see tools/sanitize.sh; default none), CMAKE_ARGS
(extra arguments), RAGCORE_BUILD_JOBS (default: all cores).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


def _cuda_mode() -> str:
    mode = os.environ.get("RAGCORE_CUDA", "AUTO").upper()
    if mode in ("ON", "1", "TRUE", "YES"):
        return "ON"
    if mode in ("OFF", "0", "FALSE", "NO"):
        return "OFF"
    return "AUTO"


def _nvcc_found() -> bool:
    return bool(os.environ.get("CUDACXX") or shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"))


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if ext.name == "ragcore._cuda":
            # built by the same CMake run as _core; missing means CMake found no CUDA compiler
            if not Path(self.get_ext_fullpath(ext.name)).exists():
                raise RuntimeError("ragcore._cuda was not built (CMake found no usable CUDA compiler)")
            return
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cfg = os.environ.get("RAGCORE_BUILD_TYPE", "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DRAGCORE_CUDA={os.environ.get('RAGCORE_CUDA', 'AUTO')}",
            f"-DRAGCORE_SANITIZE={os.environ.get('RAGCORE_SANITIZE', '')}",
        ]
        try:
            import ninja  # noqa: F401

            args += ["-G", "Ninja"]
        except ImportError:
            pass
        args += [a for a in os.environ.get("CMAKE_ARGS", "").split() if a]
        jobs = os.environ.get("RAGCORE_BUILD_JOBS", str(os.cpu_count() or 1))
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "--config", cfg, "-j", jobs], cwd=build_temp, check=True)


EXTENSIONS = [CMakeExtension("ragcore._core")]
if _cuda_mode() == "ON" or (_cuda_mode() == "AUTO" and _nvcc_found()):
    EXTENSIONS.append(CMakeExtension("ragcore._cuda"))
    EXTENSIONS[-1].optional = _cuda_mode() == "AUTO"  # AUTO: a machine without CUDA still installs

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": CMakeBuild})

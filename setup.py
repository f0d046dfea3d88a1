"""Thin CMake driver: builds the private extension ``ragcore._core`` with CMake (+ Ninja).

Environment knobs: RAGCORE_BUILD_TYPE (default Release), RAGCORE_CUDA=ON|OFF|AUTO (default AUTO),
CMAKE_ARGS (extra arguments), RAGCORE_BUILD_JOBS (default: all cores).
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
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


setup(ext_modules=[CMakeExtension("ragcore._core")], cmdclass={"build_ext": CMakeBuild})

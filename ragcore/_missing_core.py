"""The message when ``ragcore._core`` cannot be imported (instead of Python's "circular import" one)."""
import importlib.machinery
import os


def explain(init_file: str, error: BaseException) -> str:
    here = os.path.dirname(os.path.abspath(init_file))
    built = [f for f in os.listdir(here) if f.startswith("_core.") and
             any(f.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)]
    clone = os.path.exists(os.path.join(here, "..", "CMakeLists.txt"))
    if not built:
        what = f"ragcore's compiled extension (ragcore._core) is not built in {here}."
        if clone:
            return (what + " This is a source checkout: build it with `pip install -e .` here, or "
                    "`tools/build_inplace.sh`; or start Python from another directory to use an installed ragcore.")
        return what + " The installation is incomplete: reinstall ragcore (`pip install --force-reinstall ragcore`)."
    return (f"ragcore's compiled extension {', '.join(built)} in {here} failed to load: {error}. It was probably "
            "built for another Python or platform: rebuild it (`pip install -e .` in a clone, or reinstall ragcore).")

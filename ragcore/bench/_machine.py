"""The machine a benchmark runs on, and the memory and thread figures of the process that measures.

Linux-first (``/proc``), with portable fallbacks where there are any; nothing here imports an engine.
"""
from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Dict, Optional

from .._optional import dist_version

#: environment variables that size the thread pools of the engines and their BLAS / OpenMP runtimes,
#: set to the process's thread count before any engine is imported
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS", "RAGCORE_NUM_THREADS")

#: distributions whose versions a report names (those not installed are left out)
VERSIONED = ("ragcore", "numpy", "scipy", "bm25s", "numba", "tantivy", "rank-bm25", "scikit-learn", "PyStemmer",
             "faiss-cpu", "onnxruntime", "threadpoolctl", "psutil")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _proc_field(path: str, prefix: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> Dict:
    """CPU model, cores, memory, OS, Python and library versions, load average: the report's header."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    mem = _proc_field("/proc/meminfo", "MemTotal")
    ram = int(mem.split()[0]) * 1024 if mem else None
    try:
        l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        l3 = None
    versions = {"python": platform.python_version()}
    for dist in VERSIONED:
        v = dist_version(dist)
        if v is not None:
            versions[dist] = v
    from .. import __version__

    versions["ragcore"] = versions.get("ragcore", __version__)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {"cpu": cpu, "l3_cache": l3, "logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
            "ram_gib": None if ram is None else round(ram / 2**30, 1), "os": platform.platform(),
            "python": platform.python_version(), "loadavg_at_start": load, "versions": versions}


def rss_bytes() -> int:
    """The resident set size of this process now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return peak_rss_bytes()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The RSS high-water mark of this process (VmHWM; ru_maxrss where /proc is absent)."""
    hwm = _proc_field("/proc/self/status", "VmHWM")
    if hwm:
        return int(hwm.split()[0]) * 1024
    scale = 1 if platform.system() == "Darwin" else 1024   # pragma: no cover - not Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def dir_bytes(path) -> int:
    """Bytes of the files under ``path`` (a file: its size)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

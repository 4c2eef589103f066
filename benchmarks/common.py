"""Timing and report helpers shared by the benchmark modules (CPU and GPU).

    t = median_time(fn, repeats=20)          # warm-up calls first, then the median
    row = Row("numba scores", t, bytes_read=n)
    print_table([row, ...]); write_json(path, {...})

Nothing here imports a backend: the benchmark modules do, and the library
never imports the benchmarks.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per call: the median over `samples`, which are kept for the report."""

    median: float
    low: float
    high: float
    samples: list = field(default_factory=list)
    scale: float = 1.0      # >1 where the timed run was a slice scaled up to the workload
    note: str = ""

    @property
    def ms(self) -> float:
        return 1e3 * self.median * self.scale

    def scaled(self, factor: float, note: str) -> "Timing":
        return Timing(self.median, self.low, self.high, list(self.samples), self.scale * factor, note)


def median_time(fn, repeats: int = 20, warmup: int = 1, clock=time.perf_counter) -> Timing:
    """Call fn() `warmup` times untimed (compilation, caches, page faults), then `repeats` times.

    Returns the median, fastest and slowest wall-clock seconds of one call.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        start = clock()
        fn()
        samples.append(clock() - start)
    return Timing(statistics.median(samples), min(samples), max(samples), samples)


def gbps(n_bytes: float, seconds: float) -> float:
    """Decimal gigabytes per second."""
    return n_bytes / seconds / 1e9 if seconds > 0 else float("nan")


# --------------------------------------------------------------------------
# Report rows, table and JSON
# --------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    timing: Timing
    bytes_read: float = 0.0
    note: str = ""

    def as_dict(self) -> dict:
        t = self.timing
        return dict(name=self.name, ms=t.ms, median_s=t.median, min_s=t.low, max_s=t.high,
                    scale=t.scale, samples_s=t.samples, bytes_read=self.bytes_read,
                    gb_per_s=gbps(self.bytes_read, t.ms / 1e3) if self.bytes_read else None,
                    note=self.note or t.note)


def format_table(rows: list[Row]) -> str:
    """A fixed-width table: name, median ms, bytes read, GB/s, note."""
    head = f"{'what':<34} {'ms':>10} {'MB read':>9} {'GB/s':>7}  note"
    lines = [head, "-" * len(head)]
    for row in rows:
        d = row.as_dict()
        mb = f"{row.bytes_read / 1e6:9.1f}" if row.bytes_read else f"{'':>9}"
        rate = f"{d['gb_per_s']:7.2f}" if d["gb_per_s"] else f"{'':>7}"
        lines.append(f"{row.name:<34} {d['ms']:10.3f} {mb} {rate}  {d['note']}")
    return "\n".join(lines)


def print_table(rows: list[Row]) -> None:
    print(format_table(rows))


def _plain(value):
    """JSON-safe copy: dataclasses, NumPy scalars and arrays to plain Python."""
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str, report: dict) -> None:
    with open(path, "w") as out:
        json.dump(_plain(report), out, indent=2)
        out.write("\n")


# --------------------------------------------------------------------------
# Error measures used to validate before timing
# --------------------------------------------------------------------------
def relative_max_error(got, want) -> float:
    """max |got - want| / max |want| (0 when both are empty or zero)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.abs(want).max(initial=0.0))
    err = float(np.abs(got - want).max(initial=0.0))
    return err / scale if scale > 0 else err


# --------------------------------------------------------------------------
# What ran: machine, BLAS, threads
# --------------------------------------------------------------------------
def machine_info() -> dict:
    """CPU model, cores, load average (other processes share this machine), versions."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.+)", f.read())
            model = found.group(1).strip() if found else model
    except OSError:
        pass
    info = dict(cpu=model, cores=os.cpu_count(), python=platform.python_version(),
                numpy=np.__version__)
    try:
        info["load_average_1_5_15min"] = os.getloadavg()
    except OSError:
        pass
    return info


def _loaded_openblas():
    """The OpenBLAS shared library this process has loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            return path, ctypes.CDLL(path)
        except OSError:
            continue
    return None


def blas_info() -> dict:
    """Which BLAS NumPy's matmul runs and with how many threads.

    threadpoolctl when installed; else NumPy's build configuration plus a
    direct query of the loaded OpenBLAS (its thread count and core kernel).
    """
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                      "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    np.ones((2, 2), np.float32) @ np.ones((2, 2), np.float32)   # make sure BLAS is loaded
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        return dict(source="threadpoolctl", pools=pools, env=env)
    except ImportError:
        pass
    info = dict(source="numpy.show_config + OpenBLAS query (threadpoolctl not installed)", env=env)
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=blas.get("name"), version=blas.get("version"),
                    configuration=blas.get("openblas configuration"))
    except Exception:   # show_config's layout differs across NumPy versions
        pass
    loaded = _loaded_openblas()
    if loaded:
        path, lib = loaded
        info["library"] = os.path.basename(path)
        for what, restype in (("num_threads", ctypes.c_int), ("corename", ctypes.c_char_p)):
            for name in (f"scipy_openblas_get_{what}64_", f"scipy_openblas_get_{what}",
                         f"openblas_get_{what}64_", f"openblas_get_{what}"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = restype
                    value = fn()
                    info["threads" if what == "num_threads" else "core"] = \
                        value.decode() if isinstance(value, bytes) else int(value)
                    break
    return info


def blas_summary(info: dict) -> str:
    """One line for the console."""
    if info.get("source") == "threadpoolctl":
        parts = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')}, "
                 f"{p.get('num_threads')} threads" for p in info["pools"]]
        text = "; ".join(parts) or "no BLAS pool found"
    else:
        text = (f"{info.get('name', '?')} {info.get('version', '')}, core {info.get('core', '?')}, "
                f"{info.get('threads', '?')} threads")
    if info.get("env"):
        text += "; env " + " ".join(f"{k}={v}" for k, v in info["env"].items())
    return text


def progress(iterable, desc: str, enable: bool = True, total=None):
    """tqdm progress bar when tqdm is installed and enabled; the bare iterable otherwise."""
    if not enable:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False)

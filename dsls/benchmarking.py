"""What the cost benchmarks (experiments/bench_*.py) share: device choice, timing, peak memory, MAC counting, tables.

Peak memory: on CUDA the allocator's peak above the allocation at the start of the window; on CPU the process RSS
high-water mark (VmHWM, reset by writing "5" to /proc/self/clear_refs) above the RSS at the start. CPU figures are
coarse: memory the allocator already holds from earlier work is reused without raising RSS (malloc_trim is called
first to shrink that).
"""
from __future__ import annotations

import ctypes
import json
import os
import statistics
import time
from typing import Callable, Optional

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other jobs' load, read at import


def pick_device(name: Optional[str] = None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable, device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall seconds of fn() over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _status_kb(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_malloc() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """`with PeakMemory(device) as m: ...` then m.mb: peak MB above the start of the window (None = unavailable)."""

    def __init__(self, device: torch.device):
        self.device, self.mb, self._base = device, None, None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _trim_malloc()
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM to the current RSS
                self._base = _status_kb("VmRSS")
            except OSError:
                self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self._base is None:
            return
        if self.device.type == "cuda":
            sync(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            hwm = _status_kb("VmHWM")
            self.mb = None if hwm is None else (hwm - self._base) / 1024


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the start of the window"
    return "process RSS high-water mark (VmHWM after clear_refs) above the RSS at the start of the window"


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, whose backward hooks make torch.autograd.grad (the latent
    score's call) fail with "A leaf node was passed to _will_engine_execute_node"; we only need the global total."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def count_macs(fn: Callable) -> float:
    """MACs of fn() (matmul/conv only, forward and backward) = FlopCounterMode FLOPs / 2."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops() / 2


def env_lines(device: torch.device) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    omp = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    lines = [f"device: {device} ({name})", f"torch: {torch.__version__}",
             f"threads: {torch.get_num_threads()} ({', '.join(f'{k}={v}' for k, v in omp.items())})"]
    if LOAD_AT_START is not None:
        load, cores = LOAD_AT_START, os.cpu_count() or 1
        lines.append(f"load average (1 min) before this run: {load:.2f} on {cores} cores")
        if device.type == "cpu" and load > cores - 0.5:
            lines.append("WARNING: the CPU is shared/oversubscribed; OpenMP spin-waiting can inflate loops of many "
                         "small ops (the latent search) by 10-100x. Rerun with OMP_WAIT_POLICY=PASSIVE or "
                         "OMP_NUM_THREADS=1.")
    return lines


def fmt(x, spec: str = ".3g") -> str:
    if x is None:
        return "n/a"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def si(x: Optional[float]) -> str:
    """1.23e9 -> '1.23 G'."""
    if x is None:
        return "n/a"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Optional[str], obj: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2, default=str)
        print(f"wrote {path}")


def init_args(config_dir: str, phase: str) -> dict:
    """A config's model init_args (configs/<dataset>/<phase>.yaml)."""
    with open(os.path.join(config_dir, f"{phase}.yaml")) as f:
        return dict(yaml.safe_load(f)["model"].get("init_args") or {})

"""Facts about the device a profile or a measured run was taken on.

NVML (nvidia-ml-py) is imported lazily; no NVML, no GPU or a driver error means "no NVML": the
functions return None, never raise.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch

import eesim
from eesim.paths import ROOT


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is refused clearly."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: no CUDA device is available here")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return torch.device(device)


def nvml_facts(index: int = 0) -> dict | None:
    """Driver, clocks, power limit and memory of GPU `index` from NVML, or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError and its many subclasses: no driver, no GPU
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        facts = {
            "name": _text(pynvml.nvmlDeviceGetName(h)),
            "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
            "memory_total_bytes": int(mem.total), "memory_used_bytes": int(mem.used),
        }
        sm, mem_clock = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
        for key, call in (("sm_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, sm)),
                          ("max_sm_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, sm)),
                          ("mem_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, mem_clock)),
                          ("power_limit_w",
                           lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000)):
            try:
                facts[key] = call()
            except Exception:
                facts[key] = None
        return facts
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def nvml_used_bytes(index: int = 0) -> int | None:
    facts = nvml_facts(index)
    return None if facts is None else facts["memory_used_bytes"]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def git_revision() -> str | None:
    """The source tree's git revision (with '+dirty' for local changes), or None."""
    root = ROOT or Path(eesim.__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    """Everything needed to know where and how numbers were taken."""
    env = {
        "device": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else cpu_name()).strip(),
        "nvml": nvml_facts(device.index or 0) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "eesim": eesim.__version__, "git_revision": git_revision(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return env


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> int | None:
    """Reset this process's resident high-water mark to its current size (Linux); the current
    resident bytes, or None where the kernel does not offer it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kib("VmRSS")


def peak_rss() -> int | None:
    """This process's resident high-water mark in bytes since the last reset (Linux), or None."""
    return _status_kib("VmHWM")

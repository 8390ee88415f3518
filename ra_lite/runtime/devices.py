"""What hardware this process can use: CPU features, CUDA/Metal GPUs and their memory.

Every probe is best-effort and side-effect free: a missing tool or library means "no such
device", never an error. Nothing here imports llama_cpp except `llama_backend_info()`.

* CUDA: `nvidia-smi --query-gpu=...` when it is on PATH, else NVML through ctypes (the library
  nvidia-smi itself uses; unlike cudaMemGetInfo it creates no CUDA context, so probing costs no
  GPU memory).
* Metal: Apple GPUs share the system memory. macOS lets the GPU wire only part of it (Metal's
  recommendedMaxWorkingSetSize: about two thirds on machines up to 36 GiB, three quarters above),
  so that fraction of `sysctl hw.memsize` is reported as the GPU budget.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

# CPU flags that decide which llama.cpp kernels run (and which builds crash: see README on AMX).
INTERESTING_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
                         "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                         "amx_bf16", "asimd", "sve", "i8mm", "dotprod")
GIB = 1 << 30
METAL_SMALL_MACHINE_BYTES = 36 * GIB


def metal_budget_fraction(total_bytes: int) -> float:
    return 2 / 3 if total_bytes <= METAL_SMALL_MACHINE_BYTES else 3 / 4


@dataclass(frozen=True)
class GpuDevice:
    backend: str           # "cuda" or "metal"
    index: int
    name: str
    total_bytes: int
    free_bytes: int        # what a model may use now (Metal: the budget fraction of RAM)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DeviceReport:
    """What `ra-lite doctor` prints."""

    platform: str
    machine: str
    cpu_model: str
    cpu_features: list[str]
    logical_cpus: int
    default_threads: int
    llama_cpp_python: str | None
    gpu_offload_supported: bool | None      # does the installed llama.cpp build offload at all
    llama_system_info: str | None
    gpus: list[GpuDevice] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gpus"] = [g.to_dict() for g in self.gpus]
        return d


def read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_features(cpuinfo: str) -> list[str]:
    """The interesting flags of the first CPU in a /proc/cpuinfo text (x86 'flags', ARM 'Features')."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [f for f in INTERESTING_CPU_FLAGS if f in present]
    return []


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model"):
            return value.strip()
    if platform.system() == "Darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor()
    return platform.processor() or platform.machine()


def parse_nvidia_smi(text: str) -> list[GpuDevice]:
    """Rows of `nvidia-smi --query-gpu=name,memory.free,memory.total --format=csv,noheader,nounits`
    (MiB)."""
    gpus = []
    for index, line in enumerate(l for l in text.splitlines() if l.strip()):
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        try:
            free, total = int(float(parts[1])), int(float(parts[2]))
        except ValueError:
            continue   # "[N/A]" on some virtualised GPUs: no usable number
        gpus.append(GpuDevice("cuda", index, parts[0], total << 20, free << 20))
    return gpus


def probe_cuda(run=subprocess.run, which=shutil.which) -> list[GpuDevice]:
    if which("nvidia-smi"):
        try:
            out = run(["nvidia-smi", "--query-gpu=name,memory.free,memory.total",
                       "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                return parse_nvidia_smi(out.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    return _probe_nvml()


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


def _probe_nvml() -> list[GpuDevice]:
    for name in ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll"):
        try:
            nvml = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return []
    try:
        if nvml.nvmlInit_v2() != 0:
            return []
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return []
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            memory, label = _NvmlMemory(), ctypes.create_string_buffer(96)
            if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
                continue
            nvml.nvmlDeviceGetName(handle, label, 96)
            gpus.append(GpuDevice("cuda", i, label.value.decode(errors="replace") or f"GPU {i}",
                                  memory.total, memory.free))
        nvml.nvmlShutdown()
        return gpus
    except (AttributeError, OSError):
        return []


def _sysctl(key: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def probe_metal(system: str | None = None, memsize: int | None = None) -> list[GpuDevice]:
    """The Apple GPU, with its share of unified memory (only on macOS on Apple silicon)."""
    if (system or platform.system()) != "Darwin":
        return []
    if memsize is None:
        text = _sysctl("hw.memsize")
        if not text or not text.isdigit():
            return []
        memsize = int(text)
        if platform.machine() != "arm64":
            return []   # Intel Macs: Metal on discrete GPUs is not what llama.cpp targets
    budget = int(memsize * metal_budget_fraction(memsize))
    return [GpuDevice("metal", 0, "Apple GPU (unified memory)", memsize, budget)]


def probe_gpus() -> list[GpuDevice]:
    return probe_cuda() or probe_metal()


def llama_backend_info() -> tuple[str | None, bool | None, str | None]:
    """(llama-cpp-python version, GPU offload supported, llama_print_system_info())."""
    try:
        import llama_cpp
    except ImportError:
        return None, None, None
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return llama_cpp.__version__, bool(llama_cpp.llama_supports_gpu_offload()), text.strip()


def probe() -> DeviceReport:
    cpuinfo = read_cpuinfo()
    version, gpu_build, system_info = llama_backend_info()
    return DeviceReport(
        platform=platform.platform(), machine=platform.machine(), cpu_model=cpu_model(cpuinfo),
        cpu_features=cpu_features(cpuinfo), logical_cpus=os.cpu_count() or 1,
        default_threads=default_threads(), llama_cpp_python=version,
        gpu_offload_supported=gpu_build, llama_system_info=system_info, gpus=probe_gpus())


def default_threads() -> int:
    """All available CPUs on small machines; half of them (one per core under SMT) on larger.

    llama-cpp-python's own default (cpu_count // 2) gives a 2-core CI machine a single thread.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        available = os.cpu_count() or 1
    return available if available <= 4 else available // 2


def available_memory_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """Memory the system can give without swapping (Linux MemAvailable); None where unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None

"""Which arithmetic is fast on this machine, measured rather than read off a CPU flag.

A CPU that reports AVX-512 BF16 may still run bf16 matmuls slower than fp32 (one of the Intel
Xeon types this project runs on does; benchmarks/RESULTS.md has the figures per type). So
``auto`` times the two dtypes on matmuls of the model's shapes once per machine and caches the
answer in ``~/.cache/folio-llm/precision.json`` (``FOLIO_LLM_CACHE`` moves it), one entry per
CPU model, torch version and thread count, so a changed machine or setting measures again.
Measure on an idle machine: ``folio-llm precision --refresh`` measures anew.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Callable

from folio_llm.machine_cache import cache_root, read_entries, write_entries

# (rows, inner, outer) of a representative matmul: training multiplies a batch of ~2,000 token
# rows by SmolLM2's 576x1536 MLP weights; greedy generation one row per prompt (batch 16)
SHAPES = {"train": (2048, 576, 1536), "generate": (16, 576, 1536)}
REPEATS = 7


def cache_path() -> Path:
    return cache_root() / "precision.json"


def _cpuinfo() -> tuple[str | None, set[str]]:
    """The first CPU's model name and flags from /proc/cpuinfo (None and none elsewhere)."""
    name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def cpu_name() -> str:
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_type() -> str:
    """The CPU's name and its widest vector arithmetic, as the machine types are told apart
    ("AMD EPYC, AVX-512 BF16"); a flag says what the CPU has, not what is fast on it."""
    flags = _cpuinfo()[1]
    for flag, label in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return f"{cpu_name()}, {label}"
    return cpu_name()


def machine_key() -> str:
    import torch

    return f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cpu_has_bf16() -> bool:
    import torch

    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def matmul_gflops(dtype, shape: tuple[int, int, int], repeats: int = REPEATS) -> float:
    """Median GFLOP/s of ``repeats`` matmuls of ``shape`` in ``dtype`` (after one warm-up)."""
    import torch

    rows, inner, outer = shape
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=generator).to(dtype)
    b = torch.randn(inner, outer, generator=generator).to(dtype)
    # small shapes run in microseconds: time enough calls that the clock resolves them
    calls = max(1, 2_000_000_000 // (2 * rows * inner * outer))
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        times.append((time.perf_counter() - start) / calls)
    return 2 * rows * inner * outer / statistics.median(times) / 1e9


def measure() -> dict:
    """GFLOP/s of fp32 and bf16 for each workload, and the faster of the two."""
    import torch

    result: dict = {"machine": machine_key(), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    for kind, shape in SHAPES.items():
        fp32 = round(matmul_gflops(torch.float32, shape), 1)
        bf16 = round(matmul_gflops(torch.bfloat16, shape), 1)
        result[kind] = {"fp32_gflops": fp32, "bf16_gflops": bf16,
                        "fastest": "bf16" if bf16 > fp32 else "fp32"}
    return result


def probe(refresh: bool = False) -> dict:
    """The cached measurement for this machine, measured now if there is none (about 2 s)."""
    path = cache_path()
    key = machine_key()
    cache = read_entries(path)
    cached = cache.get(key)
    if not refresh and isinstance(cached, dict) and all(kind in cached for kind in SHAPES):
        return cached
    result = cache[key] = measure()
    write_entries(path, cache)
    return result


def fastest_cpu_precision(kind: str) -> str:
    """'bf16' or 'fp32' for ``kind`` ('train' or 'generate') on this CPU."""
    if not cpu_has_bf16():
        return "fp32"
    return probe()[kind]["fastest"]


def mixed_precision(choice: str, auto: Callable[[], str]) -> str:
    """Accelerate's label ("no", "bf16", "fp16") for ``train.precision``; ``auto`` is the
    backend's own pick ("fp32", "bf16" or "fp16"), asked only when the choice is 'auto'."""
    if choice == "auto":
        choice = auto()
    return "no" if choice == "fp32" else choice

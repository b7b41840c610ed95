"""torch.compile for training: compiled once per machine and model, reused by every later run.

Each decoder layer is compiled on its own (regional compilation): the layers share one code
path, so Inductor builds one kernel set for all of them and compiles in a fraction of the
whole model's time (benchmarks/RESULTS.md). Lengths are dynamic from the first call,
so the varying bucket lengths reuse one graph instead of compiling one per length.

Inductor keeps its compiled artifacts (FX graphs, AOTAutograd) in ``TORCHINDUCTOR_CACHE_DIR``;
that points at ``~/.cache/folio-llm/compile/<key>``, outside DVC outputs, where the key is a hash
of everything that shapes the graphs: torch, transformers and peft versions, CPU or GPU, the
base model's config, the LoRA shape and the precision. A later run with the same key starts
warm; a changed key cannot reuse a wrong artifact (Inductor checks its own keys too).

``train.compile: auto`` decides from the break-even: planned tokens x time saved per token vs
the compile cost, from this machine's own records of earlier runs (``record.json`` in the key's
folder), else the figures measured for issue #13. A missing C++ compiler, a backend that cannot
compile, or a failing first compiled step falls back to eager with a one-line notice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from folio_llm.machine_cache import cache_root, read_entries, write_entries

# priors from issue #13's measurements (benchmarks/RESULTS.md), used until this machine has
# records of its own
DEFAULT_GAIN = 1.18  # compiled / eager tokens per second
DEFAULT_COMPILE_SECONDS = {"cold": 50.0, "warm": 9.0}
DEFAULT_EAGER_TOKENS_PER_S = 300.0


def notice(message: str) -> None:
    print(f"compile: {message}", flush=True)


@dataclass
class CompileCache:
    folder: Path

    @classmethod
    def for_run(cls, model_config: dict, lora: dict, precision: str, device: str) -> "CompileCache":
        import peft
        import torch
        import transformers

        from folio_llm.precision import cpu_name

        parts = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                 "device": device if device != "cpu" else f"cpu {cpu_name()}", "model": _without_paths(model_config),
                 "lora": _without_paths(lora), "precision": precision, "regions": "decoder layers, dynamic"}
        key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=_sorted_if_set).encode()).hexdigest()[:16]
        return cls(cache_root() / "compile" / key)

    @property
    def record_path(self) -> Path:
        return self.folder / "record.json"

    def record(self) -> dict:
        return read_entries(self.record_path)

    @property
    def warm(self) -> bool:
        return bool(self.record().get("compiled_runs"))

    def update(self, **values) -> None:
        record = self.record()
        record.update(values)
        write_entries(self.record_path, record)


def _without_paths(config: dict) -> dict:
    """Where the base model lies changes no graph: a copy of the repo shares the cache."""
    return {k: v for k, v in config.items() if k not in ("_name_or_path", "base_model_name_or_path")}


def _sorted_if_set(value):
    """peft keeps target_modules in a set, whose order follows the process's hash seed."""
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


def worth_compiling(planned_tokens: int, cache: CompileCache) -> tuple[bool, str]:
    """(compile?, the figures behind the answer) for ``train.compile: auto``."""
    record = cache.record()
    compiled = record.get("compiled_tokens_per_s")
    eager = record.get("eager_tokens_per_s") or (compiled / DEFAULT_GAIN if compiled else DEFAULT_EAGER_TOKENS_PER_S)
    gain = compiled / eager if compiled else DEFAULT_GAIN
    state = "warm" if cache.warm else "cold"
    cost = record.get(f"compile_seconds_{state}") or DEFAULT_COMPILE_SECONDS[state]
    saved = planned_tokens / eager * (1 - 1 / gain)
    return saved > cost, (f"{state} cache, compile ~{cost:.0f} s vs ~{saved:.0f} s saved "
                          f"({planned_tokens:,} tokens, x{gain:.2f})")


def compiler_missing(device: str) -> str | None:
    """Why Inductor cannot compile here, or None."""
    try:
        import torch._inductor.config as inductor_config
    except Exception as error:  # an incomplete torch build
        return f"torch.compile is not available ({type(error).__name__})"
    if device == "cpu":
        compiler = inductor_config.cpp.cxx[-1] or "g++"
        if not shutil.which(compiler):
            return f"no C++ compiler ({compiler}) on PATH"
    elif device != "cuda":
        return f"no Inductor backend for {device}"
    return None


def decide(setting: str, planned_tokens: int, cache: CompileCache, device: str) -> bool:
    """Whether to compile this run (``train.compile``), with a one-line notice either way."""
    if setting == "off":
        return False
    missing = compiler_missing(device)
    if missing:
        notice(f"{missing}; training eagerly")
        return False
    if setting == "on":
        notice(f"on ({'warm' if cache.warm else 'cold'} cache {cache.folder})")
        return True
    worth, figures = worth_compiling(planned_tokens, cache)
    notice(f"{'compiling' if worth else 'eager'}: {figures}")
    return worth


def first_compiled_step(forward_backward, causal_lm, optimizer):
    """Run the first step, where Inductor compiles; if that fails in any way (compiler, codegen,
    backend), drop the compiled layers and run the step again eagerly. (loss, still compiled)"""
    try:
        return forward_backward(), True
    except Exception as error:
        optimizer.zero_grad(set_to_none=True)
        uncompile_layers(causal_lm)
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        notice(f"compiling failed ({type(error).__name__}: {first_line}); training eagerly")
        return forward_backward(), False


def compile_layers(causal_lm, cache: CompileCache) -> int:
    """Compile each decoder layer in place; returns how many."""
    cache.folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache.folder / "inductor")
    layers = getattr(causal_lm.get_decoder(), "layers", None)
    if not layers:
        raise TypeError(f"{type(causal_lm).__name__} has no decoder layers to compile")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def try_compile_layers(causal_lm, cache: CompileCache) -> bool:
    """``compile_layers``, or a one-line notice and False where the model or the cache folder
    does not allow it."""
    try:
        compile_layers(causal_lm, cache)
        return True
    except (OSError, TypeError, AttributeError) as error:
        notice(f"cannot compile ({type(error).__name__}: {error}); training eagerly")
        return False


def uncompile_layers(causal_lm) -> None:
    import torch

    for layer in causal_lm.get_decoder().layers:
        layer._compiled_call_impl = None
    torch._dynamo.reset()


class CompileClock:
    """The compile's cost: the first step's time less what an eager step of its tokens takes at
    the run's later rate; written to the cache record with the run's rate at the end. The record
    keeps the best rate each way has reached: on a shared 2-core machine another job only ever
    slows a run, and one slowed compiled run had made ``auto`` train the next runs eagerly."""

    def __init__(self):
        self.first_step_seconds = None
        self.first_step_tokens = 0
        self.started = time.perf_counter()

    def first_step_done(self, tokens: int) -> None:
        self.first_step_seconds = time.perf_counter() - self.started
        self.first_step_tokens = tokens

    def settle(self, cache: CompileCache, compiled: bool, was_warm: bool, tokens: int, seconds: float) -> None:
        later_tokens, later_seconds = tokens - self.first_step_tokens, seconds - (self.first_step_seconds or 0)
        if self.first_step_seconds is None or later_tokens <= 0 or later_seconds <= 0:
            return
        rate = later_tokens / later_seconds
        record = cache.record()
        if not compiled:
            cache.update(eager_tokens_per_s=round(max(rate, record.get("eager_tokens_per_s", 0.0)), 1))
            return
        overhead = max(0.0, self.first_step_seconds - self.first_step_tokens / rate)
        cache.update(compiled_tokens_per_s=round(max(rate, record.get("compiled_tokens_per_s", 0.0)), 1),
                     **{f"compile_seconds_{'warm' if was_warm else 'cold'}": round(overhead, 1)},
                     compiled_runs=int(record.get("compiled_runs", 0)) + 1)

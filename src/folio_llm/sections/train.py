"""Section ``train``: LoRA fine-tuning, either backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from folio_llm.typed_config import ParamsError, setting


@dataclass
class LoraParams:
    rank: int = setting("LoRA rank r.", 16)
    alpha: float = setting("LoRA alpha (scale = alpha / rank).", 32.0)
    dropout: float = setting("Dropout on the LoRA input.", 0.0)
    target_modules: list[str] = setting(
        "Module names to adapt ('all-linear' = every linear layer but the output head).",
        factory=lambda: ["all-linear"],
    )
    layers: int = setting(
        "Adapt only the top N decoder layers (0 = every layer). With the base frozen, the backward "
        "pass stops at the lowest adapted layer, so fewer layers train faster.", 0)

    def layer_indices(self, total: int) -> list[int] | None:
        """The indices of the adapted decoder layers of a model with ``total`` (None: all)."""
        if not self.layers:
            return None
        if self.layers > total:
            raise ValueError(f"train.lora.layers {self.layers}: the model has {total} decoder layers")
        return list(range(total - self.layers, total))


@dataclass
class TrainParams:
    backend: Literal["torch", "mlx"] = setting(
        "'torch' (peft + transformers; CUDA, MPS or CPU picked automatically) or 'mlx' "
        "(mlx-lm, for Apple Silicon; pip install 'folio-llm[mlx]').",
        "torch",
    )
    lora: LoraParams = setting("LoRA adapter shape.", factory=LoraParams)
    learning_rate: float = setting("Peak learning rate.", 3e-3)
    lr_schedule: Literal["cosine", "linear", "constant"] = setting("Decay after warm-up.", "cosine")
    warmup_ratio: float = setting("Share of optimizer steps spent warming up.", 0.05)
    weight_decay: float = setting("AdamW weight decay on the LoRA weights.", 0.0)
    epochs: float = setting(
        "Passes over the training split (ignored when max_steps > 0). The default spends the "
        "training speed-ups on quality: more epochs measured better told fields than any other "
        "lever (benchmarks/RESULTS.md); README gives the default run's minutes per machine type.", 1.4)
    max_steps: int = setting("Stop after this many optimizer steps (0 = use epochs).", 0)
    batch_size: int = setting(
        "Rows per forward pass (rows of similar length are batched together). Smaller batches "
        "give more optimizer steps in the same time on a CPU (benchmarks/RESULTS.md).", 4)
    grad_accum: int = setting("Forward passes per optimizer step.", 1)
    max_length: int = setting("Longest row in tokens; longer rows are left out (and counted), never cut.", 1024)
    structure_weight: float = setting(
        "Loss weight of the answer tokens the JSON-schema constraint forces at generation (a key's "
        "name after its first character, the quotes and colon around it, a value's opening quote "
        "or bracket); every other answer token weighs 1. 1 = all alike; the validation loss "
        "always weighs all alike.", 1.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "'auto' = bf16 autocast on CUDA; on a CPU the faster of fp32 and bf16 as measured on this "
        "machine (`folio-llm precision`): which one wins differs by CPU type (benchmarks/RESULTS.md).",
        "auto",
    )
    compile: Literal["auto", "on", "off"] = setting(
        "torch.compile each decoder layer, with the compiled code cached per machine and model in "
        "~/.cache/folio-llm/compile (outside DVC outputs). 'auto' compiles when the planned tokens "
        "pay back the compile time, from this machine's own "
        "records. Any failure falls back to eager training with a one-line notice.",
        "auto",
    )
    threads: int = setting("CPU threads for torch (0 = all cores).", 0)
    save_every: int = setting("Checkpoint every N optimizer steps (a re-run resumes from the last).", 25)
    log_every: int = setting("Log loss, learning rate and tokens/s every N optimizer steps.", 5)
    max_grad_norm: float = setting("Gradient clipping (0 = off).", 1.0)
    seed: int = setting(
        "Seed of the training order and the LoRA initialisation (0 = the top-level seed, which "
        "also draws the sample and the split). Another value trains again on the same split: "
        "how far a result moves from seed to seed.", 0)

    def check(self) -> None:
        for name in ("batch_size", "grad_accum", "max_length", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ParamsError(f"params: train.{name}: must be >= 1")
        if self.seed < 0:
            raise ParamsError("params: train.seed: must be >= 0 (0 = the top-level seed)")
        if self.lora.rank < 1:
            raise ParamsError("params: train.lora.rank: must be >= 1")
        if self.lora.layers < 0:
            raise ParamsError("params: train.lora.layers: must be >= 0 (0 = every layer)")
        if not 0 <= self.structure_weight <= 1:
            raise ParamsError("params: train.structure_weight: must be in [0, 1]")
        if self.learning_rate <= 0:
            raise ParamsError("params: train.learning_rate: must be > 0")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ParamsError("params: train.epochs: must be > 0 unless train.max_steps is set")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora.dropout < 1:
            raise ParamsError("params: train.warmup_ratio and train.lora.dropout must be in [0, 1)")

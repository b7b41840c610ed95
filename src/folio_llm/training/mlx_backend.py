"""The training loop's mlx-lm backend (``train.backend: mlx``).

For Apple Silicon (Metal); elsewhere mlx runs on the CPU (``mlx[cpu]``), much slower than torch.
Rows are tokenized and masked by ``training.data`` exactly as for torch (loss on the answer and
its end-of-turn token only), batched by the same length buckets, and stepped with the same
AdamW, warm-up/decay schedule, clipping and gradient accumulation. The adapter is written in
the peft layout (``adapter_config.json`` + ``adapter_model.safetensors`` with peft key names),
so evaluation, merge and export load it with peft whichever backend trained it.

mlx-lm's ``LoRALinear`` computes ``W x + scale * (x @ a) @ b`` with ``a`` (in, r) and ``b`` (r, out);
peft computes ``W x + (alpha / r) * B (A x)`` with ``A`` (r, in) and ``B`` (out, r). Training
with ``scale = alpha / r`` makes the two the same function with ``A = a.T`` and ``B = b.T``.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from pathlib import Path

from folio_llm.sections.train import TrainParams
from folio_llm.training.data import IGNORE, Encoded, EncodedSplit, loss_weights
from folio_llm.precision import mixed_precision
from folio_llm.training.steps import StepPlan

MISSING = "train.backend 'mlx' needs mlx and mlx-lm: pip install 'folio-llm[mlx]'"
PEFT_PREFIX = "base_model.model."


def require_mlx():
    """(mlx.core, mlx.nn, mlx.optimizers); a one-line ValueError when mlx or mlx-lm is missing."""
    try:
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        import mlx_lm  # noqa: F401 (availability check)
    except ImportError:
        raise ValueError(MISSING) from None
    return mx, nn, optim


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for the optimizer step ``step`` (0-based), as
    transformers' ``get_scheduler`` gives it (constant = constant_with_warmup)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def step_seed(seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "little")


def _model_overrides(config: dict) -> dict:
    """Config keys mlx-lm's older model classes read that transformers >= 5 nests in
    ``rope_parameters``: without them mlx-lm silently uses rope_theta 10000."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" not in rope:
        return {}
    overrides = {}
    if "rope_theta" not in config:
        overrides["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default" and not config.get("rope_scaling"):
        overrides["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return overrides


def load_base(base_dir: str | Path):
    """The base model of a Hugging Face folder as an mlx-lm model."""
    from mlx_lm.utils import load_model

    base_dir = Path(base_dir)
    config = json.loads((base_dir / "config.json").read_text())
    model, _ = load_model(base_dir, model_config=_model_overrides(config))
    return model


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def lora_keys(model, targets: list[str]) -> list[str]:
    """Paths, relative to a transformer block, of the linear layers to adapt: every linear
    layer of the blocks for 'all-linear' (the output head is outside them), else those whose
    last name is listed (peft's matching of plain module names)."""
    nn = require_mlx()[1]
    wanted = None if targets == ["all-linear"] else set(targets)
    keys: set[str] = set()
    for block in model.layers:
        for path, module in block.named_modules():
            if isinstance(module, (nn.Linear, nn.QuantizedLinear)) and (wanted is None or _leaf(path) in wanted):
                keys.add(path)
    if not keys:
        raise ValueError(f"train.lora.target_modules {targets}: no linear layer of the model matches")
    return sorted(keys)


def apply_lora(model, params: TrainParams) -> list[str]:
    """Freeze the model, swap the target layers of the adapted blocks for LoRA layers with scale
    alpha / rank; returns the adapted module names (peft's explicit target_modules)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    keys = lora_keys(model, params.lora.target_modules)
    model.freeze()
    lora = params.lora
    adapted = lora.layer_indices(len(model.layers)) or range(len(model.layers))
    linear_to_lora_layers(model, len(adapted), {  # mlx-lm adapts the last N layers
        "rank": lora.rank, "scale": lora.alpha / lora.rank, "dropout": lora.dropout, "keys": keys,
    })
    return sorted({_leaf(k) for k in keys})


def lora_modules(model) -> list[tuple[str, object]]:
    from mlx_lm.tuner.lora import LoRALinear

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def peft_tensors(model, scale: float) -> dict:
    """The adapter as peft names it: lora_A (r, in) and lora_B (out, r), float32 numpy.
    ``scale`` is peft's alpha / r; any other mlx scale is folded into B."""
    import numpy as np

    mx = require_mlx()[0]
    tensors = {}
    for name, module in lora_modules(model):
        a = np.array(module.lora_a.astype(mx.float32))
        b = np.array(module.lora_b.astype(mx.float32))
        factor = float(module.scale) / scale
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(a.T)
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(b.T * factor)
    return tensors


def adapter_config(params: TrainParams, targets: list[str], base_dir: Path, total_layers: int):
    """peft's own LoraConfig for the adapter, so adapter_config.json is what peft writes."""
    from peft import LoraConfig

    lora = params.lora
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      layers_to_transform=lora.layer_indices(total_layers), task_type="CAUSAL_LM",
                      base_model_name_or_path=str(base_dir), inference_mode=True)


def save_peft(model, out_dir: Path, params: TrainParams, targets: list[str], base_dir: Path) -> None:
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(peft_tensors(model, params.lora.alpha / params.lora.rank), str(out_dir / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    adapter_config(params, targets, base_dir, len(model.layers)).save_pretrained(str(out_dir))


def to_arrays(rows, pad_id: int, weighted: bool = False):
    """(inputs, targets, weights, mask) for next-token loss: targets are the labels shifted by
    one, mask is 1 where a target is in the loss, weights its loss weight (``data.loss_weights``
    when ``weighted``, else the mask). Rows are right-padded, so with a causal model the pads
    never reach a real position and no attention mask is needed."""
    import numpy as np

    mx = require_mlx()[0]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int32)
    weights = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row.input_ids
        labels[i, :len(row)] = row.labels
        weights[i, :len(row)] = loss_weights(row)
    targets = labels[:, 1:]
    mask = (targets != IGNORE).astype(np.float32)
    return (mx.array(ids[:, :-1]), mx.array(np.where(mask > 0, targets, 0)),
            mx.array(weights[:, 1:] if weighted else mask), mx.array(mask))


def loss_sum(model, inputs, targets, weights, mask):
    """(summed cross-entropy over the targets times their weights, number of targets in the loss)."""
    mx, nn, _ = require_mlx()
    logits = model(inputs).astype(mx.float32)
    ce = nn.losses.cross_entropy(logits, targets) * weights
    return ce.sum(), mask.sum()


class Stepper:
    """Forward/backward of micro-batches and the optimizer update (clipping, schedule)."""

    def __init__(self, model, params: TrainParams, total_steps: int):
        mx, nn, optim = require_mlx()
        from mlx.utils import tree_map

        self.mx, self.optim, self.tree_map = mx, optim, tree_map
        self.model, self.params, self.total_steps = model, params, total_steps
        self.warmup = int(params.warmup_ratio * total_steps)
        self.optimizer = optim.AdamW(learning_rate=0.0, weight_decay=params.weight_decay, bias_correction=True)
        self.optimizer.init(model.trainable_parameters())

        def loss(model, inputs, targets, weights, mask):
            s, n = loss_sum(model, inputs, targets, weights, mask)
            return s / mx.maximum(n, 1)

        self.value_and_grad = nn.value_and_grad(model, loss)

    def learning_rate(self, step: int) -> float:
        return self.params.learning_rate * lr_factor(step, self.total_steps, self.warmup, self.params.lr_schedule)

    def step(self, step: int, batches: list) -> float:
        """One optimizer step over ``batches`` (each ``to_arrays``'s arrays); returns the
        summed micro-batch losses. ``step`` is the 0-based index of this optimizer step."""
        mx = self.mx
        grads, losses = None, []
        for arrays in batches:
            value, grad = self.value_and_grad(self.model, *arrays)
            grad = self.tree_map(lambda g: g / len(batches), grad)
            grads = grad if grads is None else self.tree_map(lambda x, y: x + y, grads, grad)
            losses.append(value)
            mx.eval(grads, value)
        if self.params.max_grad_norm:
            grads, _ = self.optim.clip_grad_norm(grads, self.params.max_grad_norm)
        self.optimizer.learning_rate = self.learning_rate(step)
        self.optimizer.update(self.model, grads)
        mx.eval(self.model.trainable_parameters(), self.optimizer.state)
        return sum(v.item() for v in losses)


class MlxBackend:
    """The training loop's mlx backend: one process, the frozen base in the chosen dtype, the
    LoRA weights in fp32."""

    processes, rank, is_main, compiled = 1, 0, True, False

    def __init__(self, params: TrainParams, seed: int, base_dir: Path, pad_id: int):
        mx = require_mlx()[0]
        mx.random.seed(seed)
        self.mx, self.params, self.seed, self.base_dir, self.pad_id = mx, params, seed, base_dir, pad_id
        self.device = "mlx-gpu" if mx.default_device() == mx.gpu else "mlx-cpu"
        self.precision = mixed_precision(params.precision, lambda: "bf16" if self.device == "mlx-gpu" else "fp32")
        self.steps_done = 0

    def prepare(self, plan: StepPlan, train_rows: EncodedSplit) -> None:
        mx = self.mx
        self.model = load_base(self.base_dir)
        dtype = {"no": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}[self.precision]
        if dtype != mx.float32:
            self.model.set_dtype(dtype)
        self.targets = apply_lora(self.model, self.params)
        self.stepper = Stepper(self.model, self.params, plan.total_steps)
        self.model.train()

    def step(self, step: int, batches: list[list[Encoded]]) -> tuple[float, int]:
        self.mx.random.seed(step_seed(self.seed, step))  # dropout masks: the same after a resume
        loss = self.stepper.step(step, [to_arrays(rows, self.pad_id, weighted=True) for rows in batches])
        self.steps_done = step + 1
        return loss, sum(len(r) for rows in batches for r in rows)

    def learning_rate(self) -> float:
        return self.stepper.learning_rate(self.steps_done)

    @contextmanager
    def evaluating(self):
        self.model.eval()
        yield
        self.model.train()

    def summed_loss(self, rows: list[Encoded]) -> tuple[float, int]:
        summed, count = loss_sum(self.model, *to_arrays(rows, self.pad_id))
        return summed.item(), int(count.item())

    def save_state(self, target: Path) -> None:
        """LoRA weights and optimizer state. (The random state needs no saving: every step
        reseeds from (seed, step).)"""
        from mlx.utils import tree_flatten

        mx = self.mx
        target.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(target / "adapters.safetensors"), dict(tree_flatten(self.model.trainable_parameters())))
        mx.save_safetensors(str(target / "optimizer.safetensors"), dict(tree_flatten(self.stepper.optimizer.state)))

    def load_state(self, target: Path) -> None:
        from mlx.utils import tree_unflatten

        mx, optimizer = self.mx, self.stepper.optimizer
        self.model.load_weights(list(mx.load(str(target / "adapters.safetensors")).items()), strict=False)
        optimizer.state = tree_unflatten(list(mx.load(str(target / "optimizer.safetensors")).items()))
        mx.eval(self.model.parameters(), optimizer.state)

    def planning(self) -> tuple[str, float | None]:
        return f"{self.device} ({'fp32' if self.precision == 'no' else self.precision})", None

    def trained(self, tokens: int, seconds: float) -> None:
        pass

    def save_adapter(self, out_dir: Path) -> None:
        save_peft(self.model, out_dir, self.params, self.targets, self.base_dir)

    def barrier(self) -> None:
        pass

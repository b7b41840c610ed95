"""The training loop, one for every backend: it plans the steps, resumes, steps, logs, saves
checkpoints and writes the adapter; the backend (``torch_backend``, ``mlx_backend``) supplies the
model and its arithmetic through the ``Backend`` methods below, as mlx-lm's tuner takes its loss
and batches from the caller."""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from folio_llm.sections.train import TrainParams
from folio_llm.training.checkpoints import CheckpointFolder, resume, save_checkpoint
from folio_llm.training.data import Encoded, EncodedSplit, load_splits
from folio_llm.training.reporting import Logger, LossWindow, run_metrics, step_bar
from folio_llm.training.steps import Progress, StepPlan, fingerprint


@dataclass(frozen=True)
class RunPaths:
    """Where a training run reads (chat splits, base model) and writes (adapter, checkpoints,
    metrics/train.json, dvclive folder)."""

    data_dir: Path
    base_dir: Path
    out_dir: Path
    checkpoint_dir: Path
    metrics_path: Path | None = None
    live_dir: Path | None = None

    def __post_init__(self):
        for name in ("data_dir", "base_dir", "out_dir", "checkpoint_dir", "metrics_path", "live_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


class Backend(Protocol):
    """What the loop asks of a backend. Made with (params, seed, base_dir, pad_id)."""

    processes: int  # processes training together (each steps its share of the batches)
    rank: int
    is_main: bool
    device: str  # metrics/train.json's "device"
    precision: str  # Accelerate's label: "no", "bf16" or "fp16"
    compiled: bool

    def prepare(self, plan: StepPlan, train_rows: EncodedSplit) -> None:
        """Model with LoRA, optimizer and learning-rate schedule for ``plan``."""

    def step(self, step: int, batches: list[list[Encoded]]) -> tuple[float, int]:
        """One optimizer step (0-based ``step``) over its micro-batches: (summed micro-batch
        losses, tokens of the step over all processes)."""

    def learning_rate(self) -> float:
        """The rate the last step used next (what the log shows after a step)."""

    def evaluating(self) -> AbstractContextManager:
        """No gradients, eval mode, eager arithmetic for the validation loss."""

    def summed_loss(self, rows: list[Encoded]) -> tuple[float, int]:
        """(summed loss over the answer tokens of ``rows``, how many there are)."""

    def save_state(self, target: Path) -> None: ...

    def load_state(self, target: Path) -> None: ...

    def planning(self) -> tuple[str, float | None]:
        """(the machine and arithmetic the run is on, in words; the tokens/s this machine
        trained at before with these settings, None when it has no record)."""

    def trained(self, tokens: int, seconds: float) -> None:
        """After the last step, before the validation loss (the compile records)."""

    def save_adapter(self, out_dir: Path) -> None:
        """The adapter in peft's layout (adapter_config.json + adapter_model.safetensors)."""

    def barrier(self) -> None: ...


def backend_for(params: TrainParams) -> Callable[..., Backend]:
    if params.backend == "mlx":
        from folio_llm.training.mlx_backend import MlxBackend, require_mlx

        require_mlx()
        return MlxBackend
    from folio_llm.training.torch_backend import TorchBackend

    return TorchBackend


def train(params: TrainParams, seed: int, paths: RunPaths) -> dict:
    """Train a LoRA adapter (params.train) to ``paths.out_dir``; a re-run of the same run
    resumes from its last checkpoint. Returns metrics/train.json's values."""
    from folio_llm.models import load_tokenizer

    make_backend = backend_for(params)
    tokenizer = load_tokenizer(str(paths.base_dir))
    train_rows, valid_rows = load_splits(tokenizer, paths.data_dir, params.max_length, params.structure_weight)
    backend = make_backend(params, seed, paths.base_dir, tokenizer.pad_token_id)
    plan = StepPlan([len(r) for r in train_rows.rows], params, seed, backend.processes, backend.rank)
    backend.prepare(plan, train_rows)

    progress = Progress(fingerprint=fingerprint(params, seed, paths.data_dir, paths.base_dir))
    checkpoints = CheckpointFolder(paths.checkpoint_dir, progress.fingerprint)
    resumed_from = resume(backend, checkpoints, progress)
    logger = Logger(paths.live_dir, backend.is_main, resume=resumed_from > 0)
    if backend.is_main:
        print(planning_line(backend, plan, train_rows, progress.step), flush=True)
        if resumed_from:
            print(f"resuming from checkpoint at step {resumed_from}", flush=True)

    started, tokens_at_start = time.perf_counter(), progress.tokens
    window = LossWindow(progress.step)
    bar = step_bar(plan.total_steps, progress.step, backend.is_main)
    for group in plan.groups(progress.step):
        loss, tokens = backend.step(progress.step, [[train_rows.rows[j] for j in batch] for batch in group])
        progress.step += 1
        progress.tokens += tokens
        window.add(loss, len(group), tokens)
        bar.update(1)
        bar.set_postfix(loss=f"{loss / len(group):.4f}",
                        tok_s=f"{(progress.tokens - tokens_at_start) / (time.perf_counter() - started):.0f}")
        if progress.step % params.log_every == 0 or progress.step == plan.total_steps:
            values, left = window.close(progress.step, plan.total_steps)
            logger.log(progress.step, {"loss": values["loss"], "learning_rate": backend.learning_rate(),
                                       "tokens_per_s": values["tokens_per_s"],
                                       "epoch": progress.step / plan.steps_per_epoch}, plan.total_steps, left)
        if progress.step % params.save_every == 0 and progress.step < plan.total_steps:
            save_checkpoint(backend, checkpoints, progress)
    bar.close()

    seconds = time.perf_counter() - started
    backend.trained(progress.tokens - tokens_at_start, seconds)
    valid_loss = validation_loss(backend, valid_rows, params.batch_size)
    backend.barrier()
    # train_loss is the last logging window's mean: a second pass over the training rows costs minutes
    metrics = run_metrics(progress, plan.steps_per_epoch, train_rows, valid_rows, window.last_loss, valid_loss,
                          tokens_at_start, seconds, resumed_from, precision=backend.precision,
                          device=backend.device, processes=backend.processes, compiled=backend.compiled)
    if backend.is_main:
        backend.save_adapter(paths.out_dir)
        finish_run(paths, tokenizer, metrics, logger, checkpoints, progress.step, valid_loss)
    backend.barrier()
    return metrics


def planning_line(backend: Backend, plan: StepPlan, train_rows: EncodedSplit, done: int) -> str:
    """The run's first line: where it trains, how much, and how long that should take here."""
    tokens = plan.planned_tokens(train_rows.tokens, done)
    machine, rate = backend.planning()
    line = f"train: {machine}; {plan.total_steps - done} steps, about {tokens:,} tokens"
    if rate:
        return line + f": about {tokens / rate / 60:.1f} min at the {rate:.0f} tokens/s measured here before"
    return line + " (no earlier run on this machine: the log's time left follows from the first steps)"


def validation_loss(backend: Backend, split: EncodedSplit, batch_size: int) -> float | None:
    """Token-weighted mean loss over a split (answer tokens only), rows batched by length."""
    if not split.rows:
        return None
    total, count = 0.0, 0
    order = sorted(range(len(split.rows)), key=lambda i: len(split.rows[i]))
    with backend.evaluating():
        for start in range(0, len(order), batch_size):
            summed, answers = backend.summed_loss([split.rows[i] for i in order[start:start + batch_size]])
            total += summed
            count += answers
    return total / count if count else None


def stable_adapter_config(path: Path) -> None:
    """peft writes target_modules from a set, in an order that changes with the process's hash
    seed; sorted, the adapter folder is byte-identical run to run (and DVC sees no change)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def finish_run(paths: RunPaths, tokenizer, metrics: dict, logger: Logger, checkpoints: CheckpointFolder,
               step: int, valid_loss: float | None) -> None:
    """After the adapter is written: the tokenizer beside it, metrics/train.json, the last log
    line, and the checkpoints removed (a finished run has nothing to resume)."""
    from folio_llm.jsonl import write_json

    stable_adapter_config(paths.out_dir / "adapter_config.json")
    tokenizer.save_pretrained(paths.out_dir)
    if paths.metrics_path:
        write_json(paths.metrics_path, metrics)
    logger.log(step, {"valid_loss": valid_loss})
    logger.close()
    checkpoints.remove()

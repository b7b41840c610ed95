"""What both training backends (torch ``trainer``, ``mlx_backend``) share: the step plan, the
logging window, the checkpoint folder, the run's fingerprint and metrics/train.json."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from folio_llm.params import TrainParams
from folio_llm.training.data import EncodedSplit, bucketed_batches


@dataclass(frozen=True)
class RunPaths:
    """Where a training run reads (chat splits, base model) and writes (adapter, checkpoints,
    metrics/train.json, dvclive folder); every backend's ``train`` takes one."""

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


@dataclass
class Progress:
    """What a checkpoint must remember besides weights, optimizer, scheduler and RNG."""

    step: int = 0
    tokens: int = 0
    fingerprint: str = ""

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def fingerprint(params: TrainParams, seed: int, data_dir: Path, base_dir: Path) -> str:
    """Identifies a run: a checkpoint from other settings or data is not resumed."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(str(seed).encode())
    for path in (data_dir / "train.jsonl", base_dir / "config.json"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class StepPlan:
    """Which micro-batches make each optimizer step: length-bucketed batches, reshuffled per
    epoch with the seed, this process's share of them (``rank::world``), ``grad_accum`` a step."""

    def __init__(self, lengths: list[int], params: TrainParams, seed: int, world: int = 1, rank: int = 0):
        self.lengths, self.batch_size, self.grad_accum, self.seed = lengths, params.batch_size, params.grad_accum, seed
        self.world, self.rank = world, rank
        self.micro_per_epoch = len(bucketed_batches(lengths, params.batch_size, seed, 0)) // world
        if self.micro_per_epoch == 0:
            raise ValueError("fewer batches than processes: lower train.batch_size or use fewer processes")
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / params.grad_accum)
        self.total_steps = params.max_steps or max(1, math.ceil(params.epochs * self.steps_per_epoch))

    def groups(self, from_step: int) -> Iterator[list[list[int]]]:
        """Row indices of each micro-batch of every step from ``from_step`` to the last."""
        step = from_step
        while step < self.total_steps:
            epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
            mine = bucketed_batches(self.lengths, self.batch_size, self.seed, epoch)[self.rank::self.world]
            mine = mine[:self.micro_per_epoch]
            for start in range(step_in_epoch * self.grad_accum, self.micro_per_epoch, self.grad_accum):
                yield mine[start:start + self.grad_accum]
                step += 1
                if step >= self.total_steps:
                    return


class LossWindow:
    """Mean loss and tokens/s since the last log line, and the time left at the rate so far."""

    def __init__(self, start_step: int):
        self.started, self.start_step = time.perf_counter(), start_step
        self.last_loss: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.opened, self.loss, self.micro, self.tokens = time.perf_counter(), 0.0, 0, 0

    def add(self, loss_sum: float, micro_batches: int, tokens: int) -> None:
        self.loss += loss_sum
        self.micro += micro_batches
        self.tokens += tokens

    def close(self, step: int, total_steps: int) -> tuple[dict, float | None]:
        """(loss and tokens_per_s of the window, seconds left) and a new window."""
        elapsed = time.perf_counter() - self.opened
        self.last_loss = self.loss / max(1, self.micro)
        values = {"loss": self.last_loss, "tokens_per_s": self.tokens / elapsed if elapsed > 0 else None}
        done = step - self.start_step
        left = (time.perf_counter() - self.started) / done * (total_steps - step) if done > 0 else None
        self._reset()
        return values, left


class Logger:
    """Loss, learning rate and tokens/s to dvclive (for `dvc plots show`) and to the console."""

    def __init__(self, live_dir: Path | None, enabled: bool, resume: bool):
        self.live = None
        self.enabled = enabled
        if enabled and live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=False)

    def log(self, step: int, values: dict, total_steps: int = 0, seconds_left: float | None = None) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.step = step
            for name, value in values.items():
                if value is not None:
                    self.live.log_metric(f"train/{name}", value)
            self.live.next_step()
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if v is not None)
        left = f" (about {seconds_left / 60:.1f} min left)" if seconds_left is not None else ""
        tqdm.write(f"step {step}{f'/{total_steps}' if total_steps else ''}: {shown}{left}")

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


class CheckpointFolder:
    """``step-NNNNNN`` folders, each stamped with the run's fingerprint, and a ``last`` pointer
    written atomically; only the newest is kept. What goes inside is the backend's business."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint

    def target(self, step: int) -> Path:
        return self.folder / f"step-{step:06d}"

    def commit(self, target: Path) -> None:
        """Stamp ``target`` (already written), point ``last`` at it, remove older ones."""
        (target / "fingerprint.txt").write_text(self.fingerprint)
        (self.folder / "last.tmp").write_text(target.name)
        (self.folder / "last.tmp").replace(self.folder / "last")
        for old in self.folder.glob("step-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self, required_file: str | None = None) -> Path | None:
        """The newest checkpoint if it belongs to this run; None when there is none, or (after
        a one-line notice) when it is from other settings, data or backend: it is removed."""
        pointer = self.folder / "last"
        target = self.folder / pointer.read_text().strip() if pointer.is_file() else None
        if target is None or not target.is_dir():
            return None
        stamp = target / "fingerprint.txt"
        if (not stamp.is_file() or stamp.read_text().strip() != self.fingerprint
                or (required_file and not (target / required_file).is_file())):
            print(f"checkpoint {target} is from other settings or data: starting over", flush=True)
            self.remove()
            return None
        return target

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


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


def run_metrics(progress: Progress, steps_per_epoch: int, train_rows: EncodedSplit, valid_rows: EncodedSplit,
                train_loss, valid_loss, tokens_at_start: int, seconds: float, resumed_from: int,
                precision: str, device: str, processes: int, compiled: bool = False) -> dict:
    """metrics/train.json: the same keys whichever backend trained."""
    return {
        "steps": progress.step,
        "epochs": round(progress.step / steps_per_epoch, 3),
        "train_rows": len(train_rows.rows),
        "train_rows_too_long": train_rows.too_long,
        "valid_rows": len(valid_rows.rows),
        "train_loss": train_loss,
        "valid_loss": valid_loss,
        "tokens": progress.tokens,
        "tokens_per_s": round((progress.tokens - tokens_at_start) / seconds, 1) if seconds else None,
        "seconds": round(seconds, 1),
        "resumed_from_step": resumed_from,
        "precision": precision,
        "device": device,
        "processes": processes,
        "compiled": compiled,
    }

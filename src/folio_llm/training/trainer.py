"""LoRA fine-tuning with peft + transformers, driven by Accelerate.

One loop serves one CPU, one GPU and ``accelerate launch`` (DDP/FSDP): Accelerate places the
model, wraps it for the distributed run and mixes precision; batches are sharded here.
Checkpoints are written every ``save_every`` optimizer steps; a re-run with the same settings
resumes from the last one instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from folio_llm.jsonl import write_json
from folio_llm.params import TrainParams
from folio_llm.training.data import EncodedSplit, answer_loss, bucketed_batches, collate, load_splits


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


def resolve_precision(precision: str, device_type: str) -> str:
    """Accelerate's mixed_precision value for ``train.precision``; on a CPU, 'auto' is the
    dtype measured faster on this machine (``folio_llm.precision``)."""
    import torch

    if precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device_type == "cpu":
        from folio_llm.precision import fastest_cpu_precision

        return "bf16" if fastest_cpu_precision("train") == "bf16" else "no"
    return "no"


def fingerprint(params: TrainParams, seed: int, data_dir: Path, base_dir: Path) -> str:
    """Identifies a run: a checkpoint from other settings or data is not resumed."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(str(seed).encode())
    for path in (data_dir / "train.jsonl", base_dir / "config.json"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_model(base_dir: Path, params: TrainParams, mixed_precision: str = "no"):
    """Base + LoRA. Under bf16/fp16 autocast the frozen base is stored in that dtype, so it is
    not cast again on every forward pass; the LoRA weights stay fp32 for the optimizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    model = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="sdpa", dtype=dtype)
    targets = params.lora.target_modules
    config = LoraConfig(
        r=params.lora.rank,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def mean_loss(model, split: EncodedSplit, batch_size: int, pad_id: int, accelerator) -> float | None:
    """Token-weighted mean loss over a split (answer tokens only)."""
    import torch

    if not split.rows:
        return None
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(split.rows)), key=lambda i: len(split.rows[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = [split.rows[i] for i in order[start:start + batch_size]]
            batch = {k: v.to(accelerator.device) for k, v in collate(rows, pad_id).items()}
            with accelerator.autocast():
                loss = answer_loss(model, batch).item()
            n = sum(r.answer_tokens for r in rows)  # labels[0] is always prompt, so the shift loses none
            total += loss * n
            count += n
    model.train()
    return total / count if count else None


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
        print(f"step {step}{f'/{total_steps}' if total_steps else ''}: {shown}{left}", flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def train(
    params: TrainParams,
    seed: int,
    data_dir: str | Path,
    base_dir: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path | None = None,
    live_dir: str | Path | None = None,
) -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from folio_llm.models import load_tokenizer

    data_dir, base_dir, out_dir, checkpoint_dir = map(Path, (data_dir, base_dir, out_dir, checkpoint_dir))
    if params.threads:
        torch.set_num_threads(params.threads)
    probe_device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    AcceleratorState._reset_state()  # a second run in one process may use another precision
    # cpu=True lets a torchrun / accelerate launch of several CPU processes form a gloo group
    accelerator = Accelerator(mixed_precision=resolve_precision(params.precision, probe_device), cpu=probe_device == "cpu")
    set_seed(seed)

    tokenizer = load_tokenizer(str(base_dir))
    train_rows, valid_rows = load_splits(tokenizer, data_dir, params.max_length)

    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = [len(r) for r in train_rows.rows]
    micro_per_epoch = len(bucketed_batches(lengths, params.batch_size, seed, 0)) // world
    if micro_per_epoch == 0:
        raise ValueError("fewer batches than processes: lower train.batch_size or use fewer processes")
    steps_per_epoch = math.ceil(micro_per_epoch / params.grad_accum)
    total_steps = params.max_steps or max(1, math.ceil(params.epochs * steps_per_epoch))

    model = build_model(base_dir, params, accelerator.mixed_precision)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=params.learning_rate, weight_decay=params.weight_decay
    )
    scheduler = get_scheduler(
        params.lr_schedule if params.lr_schedule != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=int(params.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    progress = Progress(fingerprint=fingerprint(params, seed, data_dir, base_dir))
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(progress)

    resumed_from = _resume(accelerator, checkpoint_dir, progress)
    logger = Logger(live_dir, accelerator.is_main_process, resume=resumed_from > 0)
    if resumed_from:
        accelerator.print(f"resuming from checkpoint at step {resumed_from}")

    model.train()
    pad_id = tokenizer.pad_token_id
    started, tokens_at_start, resumed_steps = time.perf_counter(), progress.tokens, progress.step
    window_start, window_tokens, window_loss, window_micro = time.perf_counter(), 0, 0.0, 0
    step_tokens, last_loss = 0, None
    while progress.step < total_steps:
        epoch, step_in_epoch = divmod(progress.step, steps_per_epoch)
        batches = bucketed_batches(lengths, params.batch_size, seed, epoch)
        mine = batches[rank::world][:micro_per_epoch]
        first = step_in_epoch * params.grad_accum
        for group_start in range(first, micro_per_epoch, params.grad_accum):
            group = mine[group_start:group_start + params.grad_accum]
            for i, indices in enumerate(group):
                batch = {k: v.to(accelerator.device) for k, v in collate([train_rows.rows[j] for j in indices], pad_id).items()}
                sync = i == len(group) - 1
                with (nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
                    loss = answer_loss(model, batch)
                accelerator.backward(loss / len(group))
                window_loss += loss.detach().float().item()
                window_micro += 1
                step_tokens += int(batch["attention_mask"].sum().item())
            if params.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), params.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            step_tokens = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), "sum").item())
            progress.tokens += step_tokens
            window_tokens += step_tokens
            step_tokens = 0
            if progress.step % params.log_every == 0 or progress.step == total_steps:
                elapsed = time.perf_counter() - window_start
                last_loss = window_loss / max(1, window_micro)
                logger.log(progress.step, {
                    "loss": last_loss,
                    "learning_rate": scheduler.get_last_lr()[0],
                    "tokens_per_s": window_tokens / elapsed if elapsed > 0 else None,
                    "epoch": progress.step / steps_per_epoch,
                }, total_steps, (time.perf_counter() - started) / (progress.step - resumed_steps)
                    * (total_steps - progress.step) if progress.step > resumed_steps else None)
                window_start, window_tokens, window_loss, window_micro = time.perf_counter(), 0, 0.0, 0
            if progress.step % params.save_every == 0 and progress.step < total_steps:
                _checkpoint(accelerator, checkpoint_dir, progress)
            if progress.step >= total_steps:
                break

    seconds = time.perf_counter() - started
    valid_loss = mean_loss(model, valid_rows, params.batch_size, pad_id, accelerator)
    train_loss = last_loss  # the last logging window's mean: a second pass over training rows costs minutes
    accelerator.wait_for_everyone()
    metrics = run_metrics(progress, steps_per_epoch, train_rows, valid_rows, train_loss, valid_loss,
                          tokens_at_start, seconds, resumed_from,
                          precision=accelerator.mixed_precision, device=accelerator.device.type, processes=world)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        if metrics_path:
            write_json(metrics_path, metrics)
        logger.log(progress.step, {"valid_loss": valid_loss})
        logger.close()
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    accelerator.wait_for_everyone()
    return metrics


def run_metrics(progress: Progress, steps_per_epoch: int, train_rows: EncodedSplit, valid_rows: EncodedSplit,
                train_loss, valid_loss, tokens_at_start: int, seconds: float, resumed_from: int,
                precision: str, device: str, processes: int) -> dict:
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
    }


def _checkpoint(accelerator, checkpoint_dir: Path, progress: Progress) -> None:
    target = checkpoint_dir / f"step-{progress.step:06d}"
    accelerator.save_state(str(target))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (target / "fingerprint.txt").write_text(progress.fingerprint)
        (checkpoint_dir / "last.tmp").write_text(target.name)
        (checkpoint_dir / "last.tmp").replace(checkpoint_dir / "last")
        for old in checkpoint_dir.glob("step-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)


def _resume(accelerator, checkpoint_dir: Path, progress: Progress) -> int:
    """Load the last checkpoint if it belongs to this run; returns the step resumed from.
    A checkpoint from other settings or data is removed, and the run starts over."""
    pointer = checkpoint_dir / "last"
    target = checkpoint_dir / pointer.read_text().strip() if pointer.is_file() else None
    if target is None or not target.is_dir():
        return 0
    stamp = target / "fingerprint.txt"
    if not stamp.is_file() or stamp.read_text().strip() != progress.fingerprint:
        accelerator.print(f"checkpoint {target} is from other settings or data: starting over")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return 0
    accelerator.load_state(str(target))
    return progress.step

"""LoRA fine-tuning with peft + transformers, driven by Accelerate.

One loop serves one CPU, one GPU and ``accelerate launch`` (DDP/FSDP): Accelerate places the
model, wraps it for the distributed run and mixes precision; batches are sharded here.
Checkpoints are written every ``save_every`` optimizer steps; a re-run with the same settings
resumes from the last one instead of starting over.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from folio_llm.params import TrainParams
from folio_llm.training.data import EncodedSplit, collate, load_splits
from folio_llm.training.loop import (CheckpointFolder, Logger, LossWindow, Progress, RunPaths, StepPlan,
                                     finish_run, fingerprint, run_metrics)
from folio_llm.training.losses import AnswerLoss, mean_answer_loss, skip_lora_input_casts


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


def mean_loss(loss_model, split: EncodedSplit, batch_size: int, pad_id: int, accelerator) -> float | None:
    """Token-weighted mean loss over a split (answer tokens only), computed eagerly: the
    compiled layers are for training steps, and eager is the reference."""
    import torch

    if not split.rows:
        return None
    loss_model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(split.rows)), key=lambda i: len(split.rows[i]))
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        for start in range(0, len(order), batch_size):
            rows = [split.rows[i] for i in order[start:start + batch_size]]
            batch = {k: v.to(accelerator.device) for k, v in collate(rows, pad_id).items()}
            with accelerator.autocast():
                summed, answers = loss_model(batch["input_ids"], batch["labels"])
            total += summed.item()
            count += int(answers.item())
    loss_model.train()
    return total / count if count else None


def train(params: TrainParams, seed: int, paths: RunPaths) -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from folio_llm.models import load_tokenizer
    from folio_llm.training.compiling import CompileCache, CompileClock, decide, first_compiled_step, try_compile_layers

    data_dir, base_dir, out_dir, checkpoint_dir = paths.data_dir, paths.base_dir, paths.out_dir, paths.checkpoint_dir
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
    plan = StepPlan([len(r) for r in train_rows.rows], params, seed, world, rank)
    total_steps = plan.total_steps

    model = build_model(base_dir, params, accelerator.mixed_precision)
    if accelerator.mixed_precision != "no":
        skip_lora_input_casts(model)
    loss_model = AnswerLoss(model)
    planned_tokens = int(sum(len(r) for r in train_rows.rows) * total_steps / plan.steps_per_epoch / world)
    compile_cache = CompileCache.for_run(model.get_base_model().config.to_dict(), model.peft_config["default"].to_dict(),
                                         accelerator.mixed_precision, accelerator.device.type)
    was_warm = compile_cache.warm
    compiled = decide(params.compile, planned_tokens, compile_cache, accelerator.device.type)
    if compiled:
        compiled = try_compile_layers(loss_model.causal_lm, compile_cache)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=params.learning_rate, weight_decay=params.weight_decay
    )
    scheduler = get_scheduler(
        params.lr_schedule if params.lr_schedule != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=int(params.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    prepared, optimizer = accelerator.prepare(loss_model, optimizer)
    progress = Progress(fingerprint=fingerprint(params, seed, data_dir, base_dir))
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(progress)
    checkpoints = CheckpointFolder(checkpoint_dir, progress.fingerprint)

    resumed_from = _resume(accelerator, checkpoints, progress)
    logger = Logger(paths.live_dir, accelerator.is_main_process, resume=resumed_from > 0)
    if resumed_from:
        accelerator.print(f"resuming from checkpoint at step {resumed_from}")

    prepared.train()
    pad_id = tokenizer.pad_token_id
    started, tokens_at_start = time.perf_counter(), progress.tokens
    window = LossWindow(progress.step)
    clock = CompileClock()
    bar = step_bar(total_steps, progress.step, accelerator.is_main_process)
    for group in plan.groups(progress.step):
        step_tokens, step_loss = 0, 0.0
        for i, indices in enumerate(group):
            batch = {k: v.to(accelerator.device) for k, v in collate([train_rows.rows[j] for j in indices], pad_id).items()}

            def forward_backward():
                sync = i == len(group) - 1
                with (nullcontext() if sync else accelerator.no_sync(prepared)), accelerator.autocast():
                    loss = mean_answer_loss(prepared, batch)
                accelerator.backward(loss / len(group))
                return loss

            if compiled and clock.first_step_seconds is None:
                loss, compiled = first_compiled_step(forward_backward, loss_model.causal_lm, optimizer)
            else:
                loss = forward_backward()
            step_loss += loss.detach().float().item()
            step_tokens += int(batch["attention_mask"].sum().item())
        if params.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), params.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        step_tokens = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), "sum").item())
        progress.tokens += step_tokens
        if clock.first_step_seconds is None:
            clock.first_step_done(step_tokens)
        window.add(step_loss, len(group), step_tokens)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss / len(group):.4f}",
                        tok_s=f"{(progress.tokens - tokens_at_start) / (time.perf_counter() - started):.0f}")
        if progress.step % params.log_every == 0 or progress.step == total_steps:
            values, left = window.close(progress.step, total_steps)
            logger.log(progress.step, {"loss": values["loss"], "learning_rate": scheduler.get_last_lr()[0],
                                       "tokens_per_s": values["tokens_per_s"],
                                       "epoch": progress.step / plan.steps_per_epoch}, total_steps, left)
        if progress.step % params.save_every == 0 and progress.step < total_steps:
            _checkpoint(accelerator, checkpoints, progress)

    bar.close()
    seconds = time.perf_counter() - started
    if accelerator.is_main_process:
        clock.settle(compile_cache, compiled, was_warm, progress.tokens - tokens_at_start, seconds)
    valid_loss = mean_loss(prepared, valid_rows, params.batch_size, pad_id, accelerator)
    train_loss = window.last_loss  # the last logging window's mean: a second pass over training rows costs minutes
    accelerator.wait_for_everyone()
    metrics = run_metrics(progress, plan.steps_per_epoch, train_rows, valid_rows, train_loss, valid_loss,
                          tokens_at_start, seconds, resumed_from,
                          precision=accelerator.mixed_precision, device=accelerator.device.type, processes=world,
                          compiled=compiled)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(prepared).model.save_pretrained(out_dir)
        finish_run(paths, tokenizer, metrics, logger, checkpoints, progress.step, valid_loss)
    accelerator.wait_for_everyone()
    return metrics


def step_bar(total_steps: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total_steps, initial=done, desc="train", unit="step", disable=None if enabled else True,
                dynamic_ncols=True)


def _checkpoint(accelerator, checkpoints: CheckpointFolder, progress: Progress) -> None:
    target = checkpoints.target(progress.step)
    accelerator.save_state(str(target))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoints.commit(target)


def _resume(accelerator, checkpoints: CheckpointFolder, progress: Progress) -> int:
    """Load the last checkpoint if it belongs to this run; returns the step resumed from."""
    target = checkpoints.latest()
    accelerator.wait_for_everyone()
    if target is None:
        return 0
    accelerator.load_state(str(target))
    return progress.step

"""The torch backend of the training loop: LoRA with peft + transformers, driven by Accelerate.

One backend serves one CPU, one GPU and ``accelerate launch`` (DDP/FSDP): Accelerate places the
model, wraps it for the distributed run, mixes precision and saves the checkpoint state; the
loop (``training.loop``) shards the batches by ``rank``.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

from folio_llm.sections.train import TrainParams
from folio_llm.training.data import Encoded, EncodedSplit, collate
from folio_llm.precision import mixed_precision
from folio_llm.training.losses import AnswerLoss, mean_answer_loss, skip_lora_input_casts
from folio_llm.training.steps import StepPlan


def resolve_precision(precision: str, device_type: str) -> str:
    """Accelerate's mixed_precision value for ``train.precision``; on a CPU, 'auto' is the
    dtype measured faster on this machine (``folio_llm.precision``)."""
    def auto() -> str:
        import torch

        if device_type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device_type == "cpu":
            from folio_llm.precision import fastest_cpu_precision

            return fastest_cpu_precision("train")
        return "fp32"

    return mixed_precision(precision, auto)


def decoder_linear_names(model) -> list[str]:
    """The names of the linear layers inside the decoder layers (what 'all-linear' adapts)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.get_decoder().layers.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def build_model(base_dir: Path, params: TrainParams, mixed_precision: str = "no"):
    """Base + LoRA. Under bf16/fp16 autocast the frozen base is stored in that dtype, so it is
    not cast again on every forward pass; the LoRA weights stay fp32 for the optimizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    model = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="sdpa", dtype=dtype)
    targets = params.lora.target_modules
    layers = params.lora.layer_indices(model.config.num_hidden_layers)
    if targets == ["all-linear"]:
        # peft takes a layer subset only with module names, not with its 'all-linear' shorthand
        targets = decoder_linear_names(model) if layers else "all-linear"
    config = LoraConfig(
        r=params.lora.rank,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


class TorchBackend:
    def __init__(self, params: TrainParams, seed: int, base_dir: Path, pad_id: int):
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import set_seed

        if params.threads:
            torch.set_num_threads(params.threads)
        probe = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
        AcceleratorState._reset_state()  # a second run in one process may use another precision
        # cpu=True lets a torchrun / accelerate launch of several CPU processes form a gloo group
        self.accelerator = Accelerator(mixed_precision=resolve_precision(params.precision, probe), cpu=probe == "cpu")
        set_seed(seed)
        self.params, self.base_dir, self.pad_id = params, base_dir, pad_id
        self.processes, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.device, self.precision = self.accelerator.device.type, self.accelerator.mixed_precision
        self.compiled, self.clock = False, None

    def prepare(self, plan: StepPlan, train_rows: EncodedSplit) -> None:
        import torch
        from transformers import get_scheduler

        from folio_llm.training.compiling import CompileCache, decide, try_compile_layers

        params, accelerator = self.params, self.accelerator
        self.model = build_model(self.base_dir, params, self.precision)
        if self.precision != "no":
            skip_lora_input_casts(self.model)
        self.loss_model = AnswerLoss(self.model)
        planned_tokens = plan.planned_tokens(train_rows.tokens)
        self.compile_cache = CompileCache.for_run(self.model.get_base_model().config.to_dict(),
                                                  self.model.peft_config["default"].to_dict(), self.precision,
                                                  self.device)
        self.was_warm = self.compile_cache.warm
        if decide(params.compile, planned_tokens, self.compile_cache, self.device):
            self.compiled = try_compile_layers(self.loss_model.causal_lm, self.compile_cache)
        optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                      lr=params.learning_rate, weight_decay=params.weight_decay)
        self.scheduler = get_scheduler(params.lr_schedule if params.lr_schedule != "constant" else "constant_with_warmup",
                                       optimizer, num_warmup_steps=int(params.warmup_ratio * plan.total_steps),
                                       num_training_steps=plan.total_steps)
        self.prepared, self.optimizer = accelerator.prepare(self.loss_model, optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        self.prepared.train()

    def _batch(self, rows: list[Encoded]) -> dict:
        return {k: v.to(self.accelerator.device) for k, v in collate(rows, self.pad_id).items()}

    def step(self, step: int, batches: list[list[Encoded]]) -> tuple[float, int]:
        import torch

        from folio_llm.training.compiling import CompileClock, first_compiled_step

        accelerator = self.accelerator
        if self.clock is None:
            self.clock = CompileClock()
        step_loss, step_tokens = 0.0, 0
        for i, rows in enumerate(batches):
            batch = self._batch(rows)

            def forward_backward():
                sync = i == len(batches) - 1
                with (nullcontext() if sync else accelerator.no_sync(self.prepared)), accelerator.autocast():
                    loss = mean_answer_loss(self.prepared, batch)
                accelerator.backward(loss / len(batches))
                return loss

            if self.compiled and self.clock.first_step_seconds is None:
                loss, self.compiled = first_compiled_step(forward_backward, self.loss_model.causal_lm, self.optimizer)
            else:
                loss = forward_backward()
            step_loss += loss.detach().float().item()
            step_tokens += int(batch["attention_mask"].sum().item())
        if self.params.max_grad_norm:
            accelerator.clip_grad_norm_(self.model.parameters(), self.params.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        step_tokens = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), "sum").item())
        if self.clock.first_step_seconds is None:
            self.clock.first_step_done(step_tokens)
        return step_loss, step_tokens

    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @contextmanager
    def evaluating(self):
        """Eager, the reference: the compiled layers are for training steps."""
        import torch

        self.prepared.eval()
        with torch.no_grad(), torch.compiler.set_stance("force_eager"):
            yield
        self.prepared.train()

    def summed_loss(self, rows: list[Encoded]) -> tuple[float, int]:
        batch = self._batch(rows)
        with self.accelerator.autocast():
            summed, answers = self.prepared(batch["input_ids"], batch["labels"])
        return summed.item(), int(answers.item())

    def save_state(self, target: Path) -> None:
        self.accelerator.save_state(str(target))

    def load_state(self, target: Path) -> None:
        self.accelerator.load_state(str(target))

    def planning(self) -> tuple[str, float | None]:
        import torch

        from folio_llm.precision import cpu_type

        where = torch.cuda.get_device_name() if self.device == "cuda" else cpu_type() if self.device == "cpu" \
            else self.device
        arithmetic = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[self.precision]
        record = self.compile_cache.record()
        rate = record.get("compiled_tokens_per_s" if self.compiled else "eager_tokens_per_s")
        return f"{where} ({arithmetic}, {'compiled' if self.compiled else 'eager'} layers)", rate

    def trained(self, tokens: int, seconds: float) -> None:
        if self.is_main and self.clock is not None:
            self.clock.settle(self.compile_cache, self.compiled, self.was_warm, tokens, seconds)

    def save_adapter(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.unwrap_model(self.prepared).model.save_pretrained(out_dir)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

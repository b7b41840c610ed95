"""Each training-speed lever of issue #13 measured alone, in one process, on real batches.

The default training setup (SmolLM2-135M, LoRA r=16 on all linear layers, batch 4, bf16 autocast
where this machine computes bf16 faster) runs the same real length-bucketed batches of the
default run under each variant: the trainer as it was before #13 ("before": logits from the first
answer position on through a full fp32 log-softmax, peft's fp32 input casts, a KV cache built on
every forward), that plus one lever, all levers eagerly (today's eager trainer), and all levers
with the decoder layers compiled (today's trainer when `train.compile` decides so). Variants take
turns, ``--repeats`` rounds, median tokens/s reported (the machine is noisy); optimizer steps
run at learning rate 0 so every variant computes the same numbers. Then the attention kernels
alone (forward + backward of one layer's causal attention at each bucket length).

    python benchmarks/train_levers.py [--steps 8] [--repeats 3]
"""
from __future__ import annotations

import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def before_loss(model, batch):
    """The pre-#13 loss: the peft model's own forward (KV cache, full head from the first answer)."""
    import torch

    from folio_llm.training.data import IGNORE

    labels = batch["labels"]
    width = labels.shape[1]
    first = int((labels != IGNORE).int().argmax(dim=1).min().item())
    keep = width - max(first - 1, 0)
    logits = model(input_ids=batch["input_ids"], logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             labels[:, width - keep + 1:].reshape(-1), ignore_index=IGNORE)


class Variant:
    def __init__(self, name, chunked=False, casts=True, kv_cache=True, attention=None, compiled=False):
        self.name, self.chunked, self.casts, self.kv_cache = name, chunked, casts, kv_cache
        self.attention, self.compiled = attention, compiled


def attention_table(lengths, batch, heads, head_dim, dtype, repeats=5):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def eager(q, k, v):
        scores = (q @ k.transpose(-1, -2)) / head_dim ** 0.5
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v

    kernels = {
        "sdpa flash": lambda q, k, v: _with(sdpa_kernel(SDPBackend.FLASH_ATTENTION), q, k, v),
        "sdpa math": lambda q, k, v: _with(sdpa_kernel(SDPBackend.MATH), q, k, v),
        "eager (matmul, softmax)": eager,
    }
    rows = []
    for length in lengths:
        timings = {}
        for name, kernel in kernels.items():
            q, k, v = (torch.randn(batch, heads, length, head_dim, dtype=dtype, requires_grad=True) for _ in range(3))
            times = []
            for _ in range(repeats + 1):
                start = time.perf_counter()
                kernel(q, k, v).sum().backward()
                times.append(time.perf_counter() - start)
            timings[name] = statistics.median(times[1:]) * 1000
        rows.append((length, timings))
    return rows


def _with(context, q, k, v):
    import torch

    with context:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


@click.command()
@click.option("--steps", default=8, show_default=True, help="Timed steps per variant and round.")
@click.option("--repeats", default=3, show_default=True, help="Rounds; the median is reported.")
@click.option("--data", default=str(REPO / "data" / "datasets" / "chat"), show_default=True)
@click.option("--base", default=str(REPO / "models" / "base"), show_default=True)
def main(steps, repeats, data, base):
    import torch
    from peft.helpers import disable_input_dtype_casting
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from folio_llm.params import parse_params
    from folio_llm.training.compiling import compile_layers, CompileCache
    from folio_llm.training.losses import AnswerLoss, mean_answer_loss
    from folio_llm.training.torch_backend import build_model, resolve_precision
    from real_batches import first_batches

    params = parse_params({}).train
    precision = resolve_precision("auto", "cpu")
    _, batches = first_batches(params, base, data, steps + 1)
    model = build_model(Path(base), params, precision)
    model.train()
    loss_model = AnswerLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    print(f"precision {precision}, threads {torch.get_num_threads()}, batch {params.batch_size}, "
          f"lengths {[b['input_ids'].shape[1] for b in batches[1:]]}", flush=True)

    def step(variant, batch):
        casts = nullcontext() if variant.casts else disable_input_dtype_casting(model)
        attention = sdpa_kernel(variant.attention) if variant.attention else nullcontext()
        with casts, attention, autocast():
            if variant.chunked:
                loss = mean_answer_loss(loss_model, batch)
            elif variant.kv_cache:
                loss = before_loss(model, batch)
            else:
                with _no_cache(model):
                    loss = before_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    variants = [
        Variant("before #13"),
        Variant("+ head on answer positions, in chunks", chunked=True),
        Variant("+ no LoRA input casts", casts=False),
        Variant("+ no KV cache", kv_cache=False),
        Variant("+ sdpa math attention (instead of flash)", attention=SDPBackend.MATH),
        Variant("all levers, eager", chunked=True, casts=False, kv_cache=False),
    ]
    rates = {v.name: [] for v in variants}
    first_losses = {}
    for _ in range(repeats):
        for variant in variants:
            first_losses[variant.name] = step(variant, batches[0])  # warm-up
            start, tokens = time.perf_counter(), 0
            for batch in batches[1:]:
                step(variant, batch)
                tokens += int(batch["attention_mask"].sum())
            rates[variant.name].append(tokens / (time.perf_counter() - start))

    compiled = Variant("all levers, compiled layers", chunked=True, casts=False, kv_cache=False)
    cache = CompileCache.for_run(model.get_base_model().config.to_dict(), model.peft_config["default"].to_dict(),
                                 precision, "cpu")
    warm = cache.warm
    compile_layers(loss_model.causal_lm, cache)
    start = time.perf_counter()
    first_losses[compiled.name] = step(compiled, batches[0])
    compile_seconds = time.perf_counter() - start
    rates[compiled.name] = []
    for _ in range(repeats):
        start, tokens = time.perf_counter(), 0
        for batch in batches[1:]:
            step(compiled, batch)
            tokens += int(batch["attention_mask"].sum())
        rates[compiled.name].append(tokens / (time.perf_counter() - start))

    before = statistics.median(rates["before #13"])
    print(f"\n| variant | tokens/s (median of {repeats}) | x before | first-batch loss |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / before:.2f} | {first_losses[name]:.5f} |")
    print(f"\nfirst compiled step ({'warm' if warm else 'cold'} cache {cache.folder}): {compile_seconds:.1f} s")

    config = model.get_base_model().config
    lengths = sorted({256, 512, 768, 1024})
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    print(f"\nattention forward+backward, one layer, batch {params.batch_size}, {config.num_attention_heads} heads x "
          f"{config.hidden_size // config.num_attention_heads}, {dtype}, causal (ms, median of 5):")
    table = attention_table(lengths, params.batch_size, config.num_attention_heads,
                            config.hidden_size // config.num_attention_heads, dtype)
    names = list(table[0][1])
    print("| length | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for length, timings in table:
        print(f"| {length} | " + " | ".join(f"{timings[n]:.1f}" for n in names) + " |")
    all_eager = statistics.median(rates["all levers, eager"])
    print(f"\nbefore_tok_s={before:.1f} eager_tok_s={all_eager:.1f} "
          f"compiled_tok_s={statistics.median(rates[compiled.name]):.1f} compile_s={compile_seconds:.1f}")


class _no_cache:
    """The peft model's forward without a KV cache (config.use_cache off for the duration)."""

    def __init__(self, model):
        self.config = model.get_base_model().config

    def __enter__(self):
        self.saved, self.config.use_cache = self.config.use_cache, False

    def __exit__(self, *exc):
        self.config.use_cache = self.saved


if __name__ == "__main__":
    sys.exit(main())

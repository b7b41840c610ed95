"""Draft-then-verify vs plain greedy decoding: the evaluate stage's generation, one process.

The tuned model (models/merged, else models/base + models/adapter) answers the first N real
test prompts (data/datasets/openai/test.jsonl) under params.eval's constraints, batch
params.eval.batch_size, once per (dtype, draft_tokens) and --repeats times, in one process;
model loading is not timed. Per setting: output tokens/s (median), forward passes, tokens per
row-step (one row in one pass), drafted tokens kept, the share of tokens the constraints forced,
and how many answers are identical to plain decoding's (draft 0) in the same dtype.

    python benchmarks/drafting.py [--rows 32] [--drafts 0,2,4,6] [--dtypes float32,bfloat16] [--repeats 3]

Last line: `plain_tok_s=… drafted_tok_s=… ratio=…` for the first dtype, plain vs params.eval.draft_tokens.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


@click.command()
@click.option("--rows", default=32, show_default=True, help="Real test prompts to answer.")
@click.option("--drafts", default="0,2,4,6", show_default=True, help="draft_tokens settings (0 = plain generate).")
@click.option("--dtypes", default="float32,bfloat16", show_default=True, help="Weights dtypes to run.")
@click.option("--repeats", default=1, show_default=True, help="Timed passes per setting (median).")
def main(rows, drafts, dtypes, repeats):
    sys.path.insert(0, str(REPO / "src"))
    from folio_llm.decoding.constraints import decoding_constraint, decoding_settings
    from folio_llm.decoding.drafting import DraftStats
    from folio_llm.decoding.generate import generate_scored, load_for_inference
    from folio_llm.jsonl import load_jsonl
    from folio_llm.params import load_params

    params = load_params(REPO / "params.yaml")
    conversations = [r["messages"][:-1] for r in load_jsonl(REPO / "data/datasets/openai/test.jsonl")[:rows]]
    merged = REPO / "models" / "merged"
    model_dir, adapter = ((merged, None) if (merged / "config.json").is_file()
                          else (REPO / "models" / "base", REPO / "models" / "adapter"))
    decoding = decoding_settings(params)
    settings = [int(d) for d in drafts.split(",")]
    headline = {}
    for dtype in dtypes.split(","):
        model, tokenizer = load_for_inference(model_dir, adapter, dtype)
        plain_texts = None
        for draft in settings:
            speeds = []
            for _ in range(repeats):
                stats = DraftStats()
                started = time.perf_counter()
                answers = generate_scored(model, tokenizer, conversations, params.eval.batch_size,
                                          params.eval.max_new_tokens, decoding_constraint(tokenizer, decoding),
                                          progress=False, schema=decoding.schema, draft_tokens=draft, draft_stats=stats)
                seconds = time.perf_counter() - started
                tokens = sum(len(tokenizer(a.text, add_special_tokens=False)["input_ids"]) for a in answers)
                speeds.append(tokens / seconds)
            texts = [a.text for a in answers]
            plain_texts = plain_texts or (texts if draft == 0 else None)
            same = f"{sum(a == b for a, b in zip(texts, plain_texts))}/{len(texts)}" if plain_texts else "-"
            speed = statistics.median(speeds)
            headline.setdefault(dtype, {})[draft] = speed
            detail = stats.line() if draft else "plain generate"
            click.echo(f"dtype={dtype} draft={draft} tok_s={speed:.1f} ({', '.join(f'{s:.1f}' for s in speeds)}) "
                       f"identical={same} | {detail}")
        del model
    first = headline[dtypes.split(",")[0]]
    chosen = params.eval.draft_tokens
    if 0 in first and chosen in first:
        click.echo(f"plain_tok_s={first[0]:.1f} drafted_tok_s={first[chosen]:.1f} ratio={first[chosen] / first[0]:.2f}")


if __name__ == "__main__":
    main()

"""`predict --backend llama.cpp` batched vs one prompt at a time vs plain llama-cpp-python, in one run.

On the export stage's GGUF file and the same real test prompts, greedy, params.eval's
max_new_tokens, all under one llama.cpp model in memory:
- plain: llama-cpp-python's own chat completion, no constraint (what a user of the GGUF runs);
- one at a time: the path `predict` took before batching (llama.cpp's JSON grammar + the copy
  constraint, one `create_completion` per prompt);
- batched: `decoding.llamacpp.generate_batched`, the path `predict` and the page take now
  (xgrammar's JSON schema + the copy constraint, --batch rows a `llama_decode`), once per size
  and per --drafts count (0: a token a row a decode; N: draft-then-verify, N drafted tokens).
Answers of every constrained path are compared with one at a time's, and drafted answers also
with the same batch size's undrafted ones, row by row.

    python benchmarks/llamacpp_batched.py [--rows 32] [--batch 1,16,32] [--drafts 0,4] [--repeats 1]

Last line: `records_per_s plain=… one_at_a_time=… batched=… (batch B) ratio_vs_plain=…`.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def timed(run, repeats: int) -> tuple[float, list]:
    """(median seconds, answers of the first run)."""
    seconds, first = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        answers = run()
        seconds.append(time.perf_counter() - started)
        first = answers if first is None else first
    return statistics.median(seconds), first


@click.command()
@click.option("--model", default=None, help="GGUF file (default: the export stage's first type).")
@click.option("--data", default=str(REPO / "data" / "datasets" / "openai" / "test.jsonl"), show_default=True)
@click.option("--rows", default=32, show_default=True, help="Real test prompts (0: all).")
@click.option("--batch", "batches", default="1,16,32", show_default=True, help="Batch sizes of the batched path.")
@click.option("--drafts", default="0", show_default=True, help="Drafted tokens per step of the batched path.")
@click.option("--skip-one-at-a-time", is_flag=True, help="Leave out the slow one-at-a-time path (compare with batch 1).")
@click.option("--repeats", default=1, show_default=True, help="Runs per path; medians reported.")
def main(model, data, rows, batches, drafts, skip_one_at_a_time, repeats):
    from folio_llm.decoding import llamacpp
    from folio_llm.decoding.constraints import decoding_constraint, decoding_settings
    from folio_llm.decoding.drafting import DraftStats
    from folio_llm.params import load_params
    from folio_llm.predict import exported_gguf
    from folio_llm.splits import load_test_rows

    params = load_params(REPO / "params.yaml")
    model = Path(model) if model else REPO / exported_gguf(params)
    conversations = [r["messages"][:-1] for r in load_test_rows(data, rows)[0]]
    limit = params.eval.max_new_tokens
    decoding = decoding_settings(params)
    llm, tokenizer = llamacpp.load_gguf(model)
    sizes = [int(b) for b in batches.split(",") if b.strip()]
    print(f"{model.name}, {len(conversations)} rows, max_new_tokens {limit}, {llamacpp.threads()} threads; "
          f"constraints: schema {decoding.schema is not None}, copy {bool(decoding.copy_fields)}", flush=True)
    try:
        def plain():
            return [llm.create_chat_completion(messages, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                               max_tokens=limit)["choices"][0]["message"]["content"]
                    for messages in conversations]

        def one_at_a_time():
            return [a.text for a in llamacpp.generate_scored(llm, tokenizer, conversations, limit, decoding, False)]

        factory = decoding_constraint(tokenizer, decoding)
        seconds = {}
        seconds["plain"], plain_answers = timed(plain, repeats)
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in plain_answers)
        print(f"plain chat completion: {seconds['plain']:.1f} s ({tokens} tokens)", flush=True)
        if not skip_one_at_a_time:
            seconds["one at a time"], reference = timed(one_at_a_time, repeats)
            print(f"one at a time: {seconds['one at a time']:.1f} s", flush=True)
        else:
            reference = None
        for size in sizes:
            undrafted = None
            for draft in [int(d) for d in drafts.split(",") if d.strip()]:
                stats = DraftStats()

                def batched():
                    return [a.text for a in llamacpp.generate_batched(llm, tokenizer, conversations, size, limit,
                                                                      factory, False, decoding.schema, stats,
                                                                      draft_tokens=draft)]

                name = f"batch {size}" + (f", draft {draft}" if draft else "")
                seconds[name], answers = timed(batched, repeats)
                undrafted = answers if draft == 0 else undrafted
                compared = [(label, other) for label, other in (("one at a time", reference),
                                                                ("undrafted", undrafted if draft else None)) if other]
                print(f"{name}: {seconds[name]:.1f} s, " + ", ".join(
                    f"identical to {label}: {sum(a == b for a, b in zip(answers, other))}/{len(other)}"
                    for label, other in compared) + f"; {stats.line()}", flush=True)
                for label, other in compared:
                    for number, (mine, theirs) in enumerate(zip(answers, other), start=1):
                        if mine != theirs:
                            print(f"  row {number} differs from {label}:\n    {name}: {mine}\n    {label}: {theirs}")
    finally:
        llm.close()
    rate = {name: len(conversations) / value for name, value in seconds.items()}
    best = min((name for name in rate if name.startswith("batch")), key=lambda name: seconds[name])
    print(f"records_per_s plain={rate['plain']:.3f} one_at_a_time={rate.get('one at a time', float('nan')):.3f} "
          f"batched={rate[best]:.3f} ({best}) ratio_vs_plain={rate[best] / rate['plain']:.2f}")


if __name__ == "__main__":
    sys.exit(main())

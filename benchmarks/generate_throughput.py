"""Generation throughput: the evaluation path vs llama.cpp on the same weights, in one run.

Ours = ``evaluation.generate.generate`` as the evaluate stage runs it: transformers, batched
(params.eval.batch_size), bf16 where the CPU computes it natively (params.eval.dtype).
llama.cpp = llama-cpp-python on the GGUF files of the same merged model, one prompt at a time
(its high-level API has no batching). Both answer the same N real test prompts
(data/datasets/openai/test.jsonl) greedily with the same max_new_tokens (params.eval) and stop
at end-of-turn or the end of the JSON object; output tokens are counted the same way for both
(the answers re-tokenized by the model's tokenizer); model loading is not timed. Both use the
same number of threads (--threads, default torch's: all cores).

Weights: models/merged and models/gguf/<export.name>-<type>.gguf from the export stage; what is
missing is made in a temporary folder from models/base + models/adapter.

    python benchmarks/generate_throughput.py [--rows 32] [--repeats 1] [--types f16,q8_0] [--threads N]

The headline llama.cpp figure is the first type (f16 by default: 16-bit weights like ours in
bf16); the others are printed too. Last line:
`ours_tok_s=… llamacpp_tok_s=… ratio=…` with ratio = ours / llama.cpp (medians over --repeats).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def weights(types: list[str], tmp: Path, params) -> tuple[Path, dict[str, Path]]:
    """The merged folder and a GGUF file per type, made in ``tmp`` where the export stage's are missing."""
    from folio_llm.export import gguf_path, merge, write_ggufs

    merged = REPO / "models" / "merged"
    if not (merged / "config.json").is_file():
        merged = merge(REPO / "models" / "base", REPO / "models" / "adapter", tmp / "merged")
    ggufs = {kind: gguf_path(REPO / "models" / "gguf", params.export.name, kind) for kind in types}
    missing = [kind for kind, path in ggufs.items() if not path.is_file()]
    if missing:
        for kind, entry in write_ggufs(merged, tmp / "gguf", missing, params.export.name).items():
            ggufs[kind] = Path(entry["file"])
    return merged, ggufs


def timed(run, conversations, tokenizer) -> tuple[float, int, list[str]]:
    """(output tokens/s, output tokens, answers) of one pass."""
    started = time.perf_counter()
    answers = run(conversations)
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return tokens / seconds, tokens, answers


@click.command()
@click.option("--rows", default=32, show_default=True, help="Real test prompts to answer.")
@click.option("--repeats", default=1, show_default=True, help="Passes per backend; medians are reported.")
@click.option("--types", default="f16,q8_0", show_default=True, help="GGUF types for llama.cpp, headline first.")
@click.option("--threads", default=0, help="Threads for both backends (0 = torch's default: all cores).")
@click.option("--data", default=str(REPO / "data" / "datasets" / "openai" / "test.jsonl"), show_default=True)
def main(rows, repeats, types, threads, data):
    import torch

    from folio_llm.decoding.generate import generate, inference_dtype, load_for_inference
    from folio_llm.splits import load_test_rows
    from folio_llm.decoding.llamacpp import generate as generate_llamacpp
    from folio_llm.decoding.llamacpp import load_gguf
    from folio_llm.params import load_params

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if threads:
        torch.set_num_threads(threads)  # llama.cpp takes torch's thread count too
    params = load_params(REPO / "params.yaml")
    settings = params.eval
    kinds = [t.strip() for t in types.split(",") if t.strip()]
    conversations = [r["messages"][:-1] for r in load_test_rows(data, rows)[0]]
    dtype = inference_dtype(settings.dtype)
    print(f"{len(conversations)} prompts, max_new_tokens {settings.max_new_tokens}, {torch.get_num_threads()} threads; "
          f"ours: transformers {dtype}, batch {settings.batch_size}; llama.cpp: {', '.join(kinds)}, one at a time",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        merged, ggufs = weights(kinds, Path(tmp), params)
        model, tokenizer = load_for_inference(merged, None, dtype)

        def ours(batch):
            return generate(model, tokenizer, batch, settings.batch_size, settings.max_new_tokens, progress=False)

        ours(conversations[:1])  # warm-up: first-call allocations
        runs = [timed(ours, conversations, tokenizer) for _ in range(repeats)]
        ours_tok_s = statistics.median(r[0] for r in runs)
        reference = runs[0][2]
        print(f"ours ({dtype}): {ours_tok_s:.1f} tok/s ({runs[0][1]} tokens; runs: "
              f"{', '.join(f'{r[0]:.1f}' for r in runs)})", flush=True)
        del model

        results = {}
        for kind in kinds:
            llm, gguf_tokenizer = load_gguf(ggufs[kind])
            try:
                def llamacpp(batch):
                    return generate_llamacpp(llm, gguf_tokenizer, batch, settings.max_new_tokens, progress=False)

                llamacpp(conversations[:1])
                runs = [timed(llamacpp, conversations, tokenizer) for _ in range(repeats)]
            finally:
                llm.close()
            results[kind] = statistics.median(r[0] for r in runs)
            same = sum(a == b for a, b in zip(runs[0][2], reference)) / len(reference)
            print(f"llama.cpp {kind}: {results[kind]:.1f} tok/s ({runs[0][1]} tokens; runs: "
                  f"{', '.join(f'{r[0]:.1f}' for r in runs)}); answers identical to ours: {same:.0%}", flush=True)

    headline = results[kinds[0]]
    print(f"ours_tok_s={ours_tok_s:.1f} llamacpp_tok_s={headline:.1f} ratio={ours_tok_s / headline:.2f}")


if __name__ == "__main__":
    sys.exit(main())

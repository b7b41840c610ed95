"""What the review flags cost: generation with and without the per-token confidence recorder.

Same model, same test rows, same constraints (params.yaml), greedy; each backend's passes take
turns. Without the recorder, its processor is swapped for one that returns the scores untouched
(it is the only difference). Prints seconds per pass and whether the answers are identical.

    python benchmarks/review_flags.py --rows 16 --repeats 2
"""
from __future__ import annotations

import statistics
import time

import click


class PassThrough:
    """The recorder's place in the processor list, recording nothing."""

    def __init__(self, *args, **kwargs):
        self.rows = [[] for _ in range(args[0] if args and isinstance(args[0], int) else 1)]
        self.tokens, self.probabilities = [], []

    def __call__(self, input_ids, scores):
        return scores


@click.command()
@click.option("--rows", default=16, show_default=True, help="First N rows of the test split.")
@click.option("--repeats", default=2, show_default=True)
@click.option("--gguf", default="models/gguf/folio-llm-q8_0.gguf", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
def main(rows: int, repeats: int, gguf: str, params_path: str) -> None:
    from folio_llm import paths
    from folio_llm.decoding import doubt, generate, llamacpp
    from folio_llm.decoding.constraints import decoding_constraint, decoding_settings
    from folio_llm.params import load_params
    from folio_llm.precision import cpu_type
    from folio_llm.splits import load_test_rows

    params = load_params(params_path)
    decoding = decoding_settings(params)
    test_rows, _ = load_test_rows(paths.TEST_SPLIT, rows)
    conversations = [r["messages"][:-1] for r in test_rows]
    print(f"{cpu_type()}; {len(conversations)} test rows, JSON schema + copy constraint, greedy")

    model, tokenizer = generate.load_for_inference(paths.BASE, paths.ADAPTER, params.eval.dtype)
    factory = decoding_constraint(tokenizer, decoding)
    llm, gguf_tokenizer = llamacpp.load_gguf(gguf)
    real = {"transformers": (generate, "TokenProbabilities", doubt.TokenProbabilities),
            "llama.cpp": (llamacpp, "LlamaTokenProbabilities", doubt.LlamaTokenProbabilities)}

    def run(backend: str):
        if backend == "transformers":
            return generate.generate_scored(model, tokenizer, conversations, params.eval.batch_size,
                                            params.eval.max_new_tokens, factory, progress=False,
                                            schema=decoding.schema)
        return llamacpp.generate_scored(llm, gguf_tokenizer, conversations, params.eval.max_new_tokens, decoding,
                                        progress=False)

    try:
        for backend, (module, name, recorder) in real.items():
            seconds = {"with": [], "without": []}
            answers = {}
            for _ in range(repeats):
                for variant in ("with", "without"):
                    target = doubt if backend == "llama.cpp" else module
                    setattr(target, name, recorder if variant == "with" else PassThrough)
                    started = time.perf_counter()
                    answers[variant] = [a.text for a in run(backend)]
                    seconds[variant].append(time.perf_counter() - started)
                    setattr(target, name, recorder)
            with_s, without_s = statistics.median(seconds["with"]), statistics.median(seconds["without"])
            print(f"{backend}: with recorder {with_s:.1f} s, without {without_s:.1f} s "
                  f"(x{with_s / without_s:.3f}); answers identical: {answers['with'] == answers['without']}")
    finally:
        llm.close()


if __name__ == "__main__":
    main()

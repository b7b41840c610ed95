"""`folio-llm serve` under load: the page's "Propose" time, and the API's throughput at 1 and 4
concurrent clients, beside `predict --backend llama.cpp` on the same GGUF and prompts.

    python benchmarks/serve_throughput.py [--model models/gguf/folio-llm-q8_0.gguf] [--rows 8] [--params F]

(``--params``: another params.yaml, e.g. with ``eval.draft_tokens: 0`` to time decoding without drafts.)

Starts the app in this process on a free loopback port. One line per measurement:
`propose median_s=… first_field_median_s=…` (the streamed page endpoint: the whole proposal, and
its first field, the title), `api clients=N requests_per_s=… output_tokens_per_s=…`,
`llama.cpp in process requests_per_s=… output_tokens_per_s=…`. Run it on an idle machine.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


@click.command()
@click.option("--model", default=str(REPO / "models" / "gguf" / "folio-llm-q8_0.gguf"), show_default=True)
@click.option("--data", default=str(REPO / "data" / "datasets" / "openai" / "test.jsonl"), show_default=True)
@click.option("--rows", default=8, show_default=True, help="Test prompts per measurement.")
@click.option("--params", "params_path", default=str(REPO / "params.yaml"), show_default=True)
def main(model, data, rows, params_path):
    import httpx
    import openai

    from folio_llm.decoding.constraints import Decoding, decoding_settings
    from folio_llm.params import load_params
    from folio_llm.predict import Generator
    from folio_llm.serve import create_app, serve_in_thread
    from folio_llm.splits import load_test_rows

    params = load_params(params_path)
    conversations = [r["messages"][:-1] for r in load_test_rows(data, rows)[0]]
    schema = decoding_settings(params, reference_data=REPO / params.source.reference_data).schema
    jobs = tempfile.TemporaryDirectory()
    app = create_app(model, params, reference_dir=REPO / params.source.reference_data,
                     schemas_dir=REPO / "data" / "raw" / "folio" / "schemas", examples=[], jobs_dir=jobs.name)
    url, stop = serve_in_thread(app)

    seconds, first_field = [], []
    for conversation in conversations:
        started = time.perf_counter()
        with httpx.stream("POST", f"{url}/api/propose/stream", json={"description": conversation[-1]["content"]},
                          timeout=600) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines():
                if line and not first_field[len(seconds):]:
                    first_field.append(time.perf_counter() - started)
        seconds.append(time.perf_counter() - started)
    print(f"propose rows={len(seconds)} median_s={statistics.median(seconds):.2f} max_s={max(seconds):.2f} "
          f"first_field_median_s={statistics.median(first_field):.2f}")

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600)
    response_format = {"type": "json_schema", "json_schema": {"name": "instance", "schema": schema}}

    def ask(conversation):
        reply = client.chat.completions.create(model=params.export.name, messages=conversation, temperature=0,
                                               max_tokens=params.eval.max_new_tokens, response_format=response_format)
        return reply.usage.completion_tokens

    for clients in (1, 4):
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            tokens = sum(pool.map(ask, conversations))
        elapsed = time.perf_counter() - started
        print(f"api clients={clients} requests={len(conversations)} requests_per_s={len(conversations) / elapsed:.3f} "
              f"output_tokens_per_s={tokens / elapsed:.1f}")
    stop()

    generator = Generator.load(model, None, "llama.cpp", max_new_tokens=params.eval.max_new_tokens,
                               decoding=Decoding(schema, None), draft_tokens=params.eval.draft_tokens)
    started = time.perf_counter()
    answers = generator.answer(conversations, progress=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(generator.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    generator.close()
    print(f"llama.cpp in process (predict --backend llama.cpp --no-copy) requests={len(conversations)} "
          f"requests_per_s={len(conversations) / elapsed:.3f} output_tokens_per_s={tokens / elapsed:.1f}")


if __name__ == "__main__":
    main()

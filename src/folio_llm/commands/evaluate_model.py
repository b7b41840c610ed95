"""`folio-llm evaluate`: one model, local (transformers, llama.cpp) or behind an OpenAI-compatible API,
answers a test split and is scored as the evaluate stage scores (commands/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm.commands.evaluate import evaluate_one
from folio_llm.commands.options import PARAMS_OPTION, SCHEMAS_OPTION, friendly_errors
from folio_llm.params import load_params


@click.command("evaluate")
@click.option("--model", "model", required=True,
              help="transformers: a base model folder (HF layout); llama.cpp: a .gguf file; openai: the served "
                   "model's name.")
@click.option("--adapter", "adapter_dir", default=None, type=click.Path(file_okay=False),
              help="LoRA adapter (peft layout), transformers only.")
@click.option("--backend", type=click.Choice(["transformers", "llama.cpp", "openai"]), default=None,
              help="[default: llama.cpp for a .gguf file, else transformers]")
@click.option("--base-url", default=None, help="openai: the API's base URL, e.g. http://127.0.0.1:8000/v1 "
                                               "(key from OPENAI_API_KEY).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64),
              help="openai: requests in flight at once.")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="Test split, OpenAI chat layout.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Metrics JSON.")
@click.option("--predictions", default=None, type=click.Path(dir_okay=False), help="Per-row outputs and field outcomes (JSONL).")
@click.option("--constrained/--no-constrained", default=None,
              help="JSON-schema constrained decoding; for openai, the schema as a structured-output response format "
                   "(default: params.eval).")
@click.option("--copy/--no-copy", default=None,
              help="Copy-constrained decoding of params.eval.copy_fields, local backends "
                   "(default: params.eval.copy_constraint).")
@click.option("--limit", default=None, type=int, help="Only the first N rows (default: params.eval.limit).")
@SCHEMAS_OPTION
@PARAMS_OPTION
@friendly_errors
def evaluate(model, adapter_dir, backend, base_url, concurrency, data_path, out, predictions, constrained, copy, limit,
             schemas, params_path):
    """Generate answers for a test split and score them field by field: a local model
    (transformers or llama.cpp) or any model behind an OpenAI-compatible chat API (vLLM, Ollama,
    llama.cpp's server, `folio-llm serve`, OpenAI), scored the same way."""
    from folio_llm.evaluation.run import folio_checks, write_metrics
    from folio_llm.splits import load_test_rows, load_train_answers

    backend = backend or ("llama.cpp" if model.lower().endswith(".gguf") else "transformers")
    if backend == "openai" and not base_url:
        raise click.UsageError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    if adapter_dir and backend != "transformers":
        raise click.UsageError(f"--adapter is for the transformers backend; merge it first for {backend}")
    params = load_params(params_path)
    checks = folio_checks(schemas, params.source.reference_data)
    rows, meta = load_test_rows(data_path, params.eval.limit if limit is None else limit)
    train_answers = load_train_answers(data_path)
    if backend == "transformers":
        if not Path(model).is_dir():
            raise ValueError(f"model folder not found: {model}")
        result = evaluate_one(params, checks, model, adapter_dir, rows, meta,
                              label="tuned" if adapter_dir else "base", predictions=predictions,
                              constrained=constrained, copy=copy, train_answers=train_answers)
    else:
        result = evaluate_answerer(params, checks, backend, model, base_url, concurrency, rows, meta,
                                   predictions=predictions, constrained=constrained, copy=copy,
                                   train_answers=train_answers)
    write_metrics(out, result)


def evaluate_answerer(params, checks, backend: str, model: str, base_url: str | None, concurrency: int, rows, meta, *,
                      predictions, constrained: bool | None, copy: bool | None, train_answers) -> dict:
    """Answer the rows with llama.cpp (a GGUF file) or an OpenAI-compatible API, then score them."""
    import time

    from folio_llm.checking import AnswerChecks
    from folio_llm.decoding.constraints import decoding_settings
    from folio_llm.evaluation.run import score_answers, write_predictions

    settings = params.eval
    decoding = decoding_settings(params, constrained, copy)
    conversations = [row["messages"][:-1] for row in rows]
    label = Path(model).name if backend == "llama.cpp" else model
    started = time.perf_counter()
    confidences = None
    if backend == "llama.cpp":
        from folio_llm.predict import Generator

        generator = Generator.load(model, None, backend, max_new_tokens=settings.max_new_tokens, decoding=decoding)
        try:
            answers = generator.answer_scored(conversations)
            outputs, confidences = [a.text for a in answers], [a.confidence for a in answers]
            tokens = sum(len(generator.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
        finally:
            generator.close()
    else:
        from folio_llm.decoding.chat_api import ChatApi, ChatApiError

        api = ChatApi(base_url, model, schema=decoding.schema, max_new_tokens=settings.max_new_tokens, concurrency=concurrency)
        try:
            outputs = api.answer(conversations)
        except ChatApiError as exc:
            if predictions:
                write_predictions(predictions, rows, meta, label, exc.answers)
                kept = sum(a is not None for a in exc.answers)
                raise ValueError(f"{exc} ({kept} answers so far kept in {predictions})") from None
            raise
        tokens = api.usage["completion_tokens"] or None
        if api.structured is False:
            click.echo(f"note: {base_url} takes no JSON-schema response format: plain prompting", err=True)
    seconds = time.perf_counter() - started
    folio_schema, reference = checks
    result = score_answers(outputs, rows, meta, seconds=seconds, output_tokens=tokens, predictions_path=predictions,
                           label=label, folio_schema=folio_schema, reference_data=reference,
                           train_answers=train_answers, untold_targets=params.dataset.untold_targets,
                           confidences=confidences, checks=AnswerChecks.of(params))
    result["generation"]["backend"] = backend
    click.echo(f"{label}: {result['n']} rows, macro {result['macro']:.3f}, parse rate {result['parse_rate']:.3f}")
    return result



"""Stage `evaluate`: the base model (zero-shot) and the tuned model on the test split, scored field
by field (transformers, batched). `folio-llm evaluate` (commands/evaluate_model.py) scores one model of
any backend the same way."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, SCHEMAS_OPTION, friendly_errors
from folio_llm.sections import load_sections
from folio_llm.sections.dataset import DatasetParams
from folio_llm.sections.denormalize import DenormalizeParams
from folio_llm.sections.eval import EvalParams
from folio_llm.sections.source import SourceParams


def evaluate_one(params, checks, model_dir, adapter_dir, rows, meta, *, label: str, predictions,
                  constrained: bool | None = None, max_new_tokens: int | None = None,
                  train_answers: list[dict] | None = None, copy: bool | None = None) -> dict:
    """Load one model, answer the rows, score them; one line to the console. ``checks``:
    evaluation.run.folio_checks, loaded once per command."""
    from folio_llm.checking import AnswerChecks
    from folio_llm.decoding.constraints import decoding_constraint, decoding_settings
    from folio_llm.decoding.generate import load_for_inference
    from folio_llm.evaluation.run import evaluate_model

    settings = params.eval
    folio_schema, reference = checks
    model, tokenizer = load_for_inference(model_dir, adapter_dir, settings.dtype)
    decoding = decoding_settings(params, constrained, copy)
    result = evaluate_model(model, tokenizer, rows, meta, batch_size=settings.batch_size,
                            max_new_tokens=max_new_tokens or settings.max_new_tokens, predictions_path=predictions,
                            logits_processor_factory=decoding_constraint(tokenizer, decoding), label=label,
                            folio_schema=folio_schema, reference_data=reference, train_answers=train_answers,
                            untold_targets=params.dataset.untold_targets,
                            schema=decoding.schema,
                            draft_tokens=settings.draft_tokens, checks=AnswerChecks.of(params))
    click.echo(f"{label}: {result['n']} rows, macro {result['macro']:.3f}, parse rate {result['parse_rate']:.3f}")
    return result


@click.command("evaluate-stage")
@click.option("--base", "base_dir", default=paths.BASE, show_default=True, type=click.Path(file_okay=False))
@click.option("--adapter", "adapter_dir", default=paths.ADAPTER, show_default=True, type=click.Path(file_okay=False))
@click.option("--data", "data_path", default=paths.TEST_SPLIT, show_default=True, type=click.Path(dir_okay=False))
@click.option("--out", default=paths.EVAL_METRICS, show_default=True, type=click.Path(dir_okay=False))
@click.option("--predictions-dir", default=paths.PREDICTIONS, show_default=True, type=click.Path(file_okay=False))
@click.option("--fields-table", default=paths.EVAL_FIELDS_TABLE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--styles-table", default=paths.EVAL_STYLES_TABLE, show_default=True, type=click.Path(dir_okay=False),
              help="Told-field macro per description style (dvc plots).")
@click.option("--review-table", default=paths.EVAL_REVIEW_TABLE, show_default=True, type=click.Path(dir_okay=False),
              help="The tuned model's review flags: recall and false alarms per threshold (dvc plots).")
@SCHEMAS_OPTION
@PARAMS_OPTION
@friendly_errors
def evaluate_stage(base_dir, adapter_dir, data_path, out, predictions_dir, fields_table, styles_table, review_table,
                   schemas, params_path):
    """Stage `evaluate`: the base model (zero-shot) and the tuned model on the same test
    prompts; metrics/eval.json holds both, under `base` and `tuned`."""
    from folio_llm.evaluation.run import (folio_checks, write_field_table, write_metrics, write_review_table,
                                          write_style_table)
    from folio_llm.splits import load_test_rows, load_train_answers

    params = load_sections(params_path, eval=EvalParams, source=SourceParams, dataset=DatasetParams,
                           denormalize=DenormalizeParams)
    settings = params.eval
    checks = folio_checks(schemas, params.source.reference_data)
    rows, meta = load_test_rows(data_path, settings.limit)
    train_answers = load_train_answers(data_path)
    results = {}
    for label, adapter in (("base", None), ("tuned", adapter_dir)):
        limit = settings.max_new_tokens
        if label == "base" and settings.base_max_new_tokens:
            limit = min(limit, settings.base_max_new_tokens)
        results[label] = evaluate_one(params, checks, base_dir, adapter, rows, meta, label=label,
                                       predictions=Path(predictions_dir) / f"{label}.jsonl", max_new_tokens=limit,
                                       train_answers=train_answers)
    write_metrics(out, results)
    write_field_table(fields_table, results)
    write_style_table(styles_table, results)
    write_review_table(review_table, results["tuned"])

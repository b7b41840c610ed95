"""The same test records described in every style: how well does a model read each way of writing?

The evaluate stage draws one style per test row (about 20 rows a style); this renders every
test record in every style (``params.dataset.styles`` keys, or ``--styles``) and scores the
model on each with the evaluate stage's decoding (JSON schema, copy constraint per params),
against the whole record.

    python benchmarks/styles.py [--rows 100] [--styles oneline,isbd] [--no-copy] [--adapter models/adapter]
                                [--predictions DIR]

One line per style: `style=… n=… macro=… told=… [ci] inferred=…`, then per field its score and
how many answers wrote it where the reference has none (`place=0.80/made-up 3`), and the seconds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def test_records(meta: list[dict], denormalized: Path) -> list[tuple[str, dict]]:
    """(key, record) of each test row, from the denormalized records the dataset stage read."""
    from folio_llm.dataset import record_key

    wanted = {m["id"] for m in meta}
    found: dict[str, dict] = {}
    with open(denormalized, encoding="utf-8") as handle:
        for index, line in enumerate(handle, start=1):
            record = json.loads(line)
            key = record_key(record, index)
            if key in wanted:
                found[key] = record
    return [(m["id"], found[m["id"]]) for m in meta if m["id"] in found]


@click.command()
@click.option("--base", "base_dir", default=str(REPO / "models" / "base"), show_default=True)
@click.option("--adapter", "adapter_dir", default=str(REPO / "models" / "adapter"), show_default=True)
@click.option("--data", "data_path", default=str(REPO / "data" / "datasets" / "openai" / "test.jsonl"),
              show_default=True)
@click.option("--denormalized", default=str(REPO / "data" / "denormalized.jsonl"), show_default=True)
@click.option("--rows", default=100, show_default=True, help="Test records to describe in each style.")
@click.option("--styles", default="", help="Comma-separated styles [default: all of params.dataset.styles].")
@click.option("--copy/--no-copy", default=None, help="Copy constraint [default: params.eval.copy_constraint].")
@click.option("--params", "params_path", default=str(REPO / "params.yaml"), show_default=True)
@click.option("--predictions", "predictions_dir", default="",
              help="Write each style's answers and field outcomes to DIR/<style>.jsonl.")
def main(base_dir, adapter_dir, data_path, denormalized, rows, styles, copy, params_path, predictions_dir):
    from folio_llm.checking import AnswerChecks
    from folio_llm.decoding.constraints import decoding_constraint, decoding_settings
    from folio_llm.decoding.generate import load_for_inference
    from folio_llm.evaluation.run import evaluate_model
    from folio_llm.splits import load_test_rows, load_train_answers
    from folio_llm.params import load_params
    from folio_llm.prompts import PromptRenderer

    params = load_params(params_path)
    _, meta = load_test_rows(data_path, rows)
    if meta is None:
        raise click.UsageError(f"no meta rows beside {data_path}")
    records = test_records(meta, Path(denormalized))
    renderer = PromptRenderer(params.dataset, params.seed)
    model, tokenizer = load_for_inference(base_dir, adapter_dir, params.eval.dtype)
    decoding = decoding_settings(params, None, copy)
    factory = decoding_constraint(tokenizer, decoding)
    train_answers = load_train_answers(data_path)
    for style in [s for s in styles.split(",") if s] or list(params.dataset.styles):
        examples = [renderer.render(record, key, style) for key, record in records]
        started = time.perf_counter()
        report = evaluate_model(model, tokenizer, [{"messages": e.messages} for e in examples],
                                [e.meta() for e in examples], batch_size=params.eval.batch_size,
                                predictions_path=Path(predictions_dir) / f"{style}.jsonl" if predictions_dir else None,
                                max_new_tokens=params.eval.max_new_tokens, logits_processor_factory=factory,
                                train_answers=train_answers, untold_targets=params.dataset.untold_targets,
                                schema=decoding.schema,
                                draft_tokens=params.eval.draft_tokens, checks=AnswerChecks.of(params))
        ci = report["macro_transcribed_ci"] or [float("nan")] * 2
        click.echo(f"style={style} n={report['n']} macro={report['macro']:.3f} told={report['macro_transcribed']:.3f} "
                   f"[{ci[0]:.3f}, {ci[1]:.3f}] inferred={report['macro_inferred']:.3f} "
                   + " ".join(f"{name}={report['fields'][name]['score']:.2f}"
                              f"/made-up {report['fields'][name]['hallucinated']}"
                              for name in ("title", "contributors", "publisher", "place", "subjects",
                                           "physicalDescriptions"))
                   + f" seconds={time.perf_counter() - started:.0f}", err=False)


if __name__ == "__main__":
    main()

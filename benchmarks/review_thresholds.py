"""A review threshold per field, chosen on one split's answers and checked on another's.

The model is sure of some wrong fields (a place) more often than of others (a name), so one
threshold for every field (``eval.review_below``) spends false alarms where they find little.
This picks, on the answers of ``--choose`` (the valid split: never the rows it is checked on),
the thresholds that flag the most wrong told fields with false alarms at or under
``--false-alarms`` (evaluation.review.thresholds_for), prints them as ``eval.review_below_fields``
and the recall and false alarms they give on ``--check`` (the test split) beside the one
threshold's. Each predictions file comes from `folio-llm evaluate` on that split:

    folio-llm evaluate --model models/base --adapter models/adapter \\
        --data data/datasets/openai/valid.jsonl --out /tmp/valid.json --predictions /tmp/valid.jsonl
    python benchmarks/review_thresholds.py --choose /tmp/valid.jsonl --check data/predictions/tuned.jsonl
"""
from __future__ import annotations

import json
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def told_pairs(predictions: str, meta_path: str, template: frozenset[str]):
    """The told fields of a predictions file, with their outcome, confidence and unused text."""
    from folio_llm.evaluation.review import told_fields
    from folio_llm.jsonl import load_jsonl

    answers = load_jsonl(predictions)
    meta = {row["id"]: row for row in load_jsonl(meta_path)}
    missing = [a["id"] for a in answers if a["id"] not in meta]
    if missing:
        raise click.ClickException(f"{predictions}: {len(missing)} answers have no row in {meta_path} (first: {missing[0]})")
    return told_fields(answers, [meta[a["id"]] for a in answers], [a.get("confidence") or {} for a in answers],
                       [a.get("unused") or [] for a in answers], template)


@click.command()
@click.option("--choose", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Predictions to choose the thresholds on (the valid split's).")
@click.option("--choose-meta", default=str(REPO / "data" / "datasets" / "meta" / "valid.jsonl"), show_default=True)
@click.option("--check", default=str(REPO / "data" / "predictions" / "tuned.jsonl"), show_default=True,
              type=click.Path(dir_okay=False), help="Predictions to check them on (the test split's).")
@click.option("--check-meta", default=str(REPO / "data" / "datasets" / "meta" / "test.jsonl"), show_default=True)
@click.option("--false-alarms", default=0.15, show_default=True, type=click.FloatRange(0, 1),
              help="Largest share of the right told fields flagged.")
@click.option("--params", "params_path", default=str(REPO / "params.yaml"), show_default=True)
def main(choose, choose_meta, check, check_meta, false_alarms, params_path):
    import yaml

    from folio_llm.evaluation.review import rates, thresholds_for
    from folio_llm.params import load_params
    from folio_llm.unused import review_template

    params = load_params(params_path)
    template = review_template(params) or frozenset()
    chosen_on = told_pairs(choose, choose_meta, template)
    fields = thresholds_for(chosen_on, false_alarms)
    click.echo(yaml.safe_dump({"eval": {"review_below_fields": fields}}, sort_keys=False).rstrip())
    one = params.eval.review_below
    splits = [("choose", chosen_on)] + ([("check", told_pairs(check, check_meta, template))] if check else [])
    for name, pairs in splits:
        for label, below in ((f"review_below {one}", one), ("per field", fields)):
            found = rates(pairs, below)
            click.echo(f"{name}: {label}: recall {found['recall']} false alarms {found['false_alarms']} "
                       f"({found['wrong']} wrong, {found['right']} right)")


if __name__ == "__main__":
    main()

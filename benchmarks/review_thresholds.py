"""Would a review threshold per field find more wrong fields than one for all (``eval.review_below``)?

Chooses, on the answers of ``--choose`` (the valid split: never the rows it is checked on), the
thresholds per field that flag the most wrong told fields with false alarms at or under
``--false-alarms`` (for each price of a false alarm every field takes the threshold worth most
at that price; the dearest price within the share wins), then prints the recall and false
alarms they and the one threshold give on ``--check`` (the test split). Each predictions file
comes from `folio-llm evaluate` on that split:

    folio-llm evaluate --model models/base --adapter models/adapter \\
        --data data/datasets/openai/valid.jsonl --out /tmp/valid.json --predictions /tmp/valid.jsonl
    python benchmarks/review_thresholds.py --choose /tmp/valid.jsonl
"""
from __future__ import annotations

from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
GRID = (0.0,) + tuple(round(0.05 * step, 2) for step in range(1, 20)) + (0.97, 0.99)


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


def flagged(pair, thresholds: dict[str, float], default: float) -> bool:
    return pair.flagged(thresholds.get(pair.field, default))


def recall_and_false_alarms(pairs, thresholds: dict[str, float], default: float) -> tuple[float, float]:
    wrong = [p for p in pairs if p.wrong]
    right = [p for p in pairs if not p.wrong]
    return (sum(flagged(p, thresholds, default) for p in wrong) / max(len(wrong), 1),
            sum(flagged(p, thresholds, default) for p in right) / max(len(right), 1))


def thresholds_per_field(pairs, false_alarms: float) -> dict[str, float]:
    fields = sorted({p.field for p in pairs})
    right = sum(not p.wrong for p in pairs) or 1
    counts = {(name, below): (sum(p.flagged(below) for p in pairs if p.field == name and p.wrong),
                              sum(p.flagged(below) for p in pairs if p.field == name and not p.wrong))
              for name in fields for below in GRID}
    best: tuple[int, dict[str, float]] = (-1, {name: 0.0 for name in fields})
    for price in [round(0.05 * step, 2) for step in range(400, 0, -1)]:
        chosen = {name: max(GRID, key=lambda below: (counts[name, below][0] - price * counts[name, below][1], -below))
                  for name in fields}
        if sum(counts[name, below][1] for name, below in chosen.items()) / right <= false_alarms:
            found = sum(counts[name, below][0] for name, below in chosen.items())
            if found > best[0]:
                best = (found, chosen)
    return best[1]


@click.command()
@click.option("--choose", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Predictions to choose the thresholds on (the valid split's).")
@click.option("--choose-meta", default=str(REPO / "data" / "datasets" / "meta" / "valid.jsonl"), show_default=True)
@click.option("--check", default=str(REPO / "data" / "predictions" / "tuned.jsonl"), show_default=True,
              type=click.Path(dir_okay=False, exists=True), help="Predictions to check them on (the test split's).")
@click.option("--check-meta", default=str(REPO / "data" / "datasets" / "meta" / "test.jsonl"), show_default=True)
@click.option("--false-alarms", default=0.15, show_default=True, type=click.FloatRange(0, 1),
              help="Largest share of the right told fields flagged.")
@click.option("--params", "params_path", default=str(REPO / "params.yaml"), show_default=True)
def main(choose, choose_meta, check, check_meta, false_alarms, params_path):
    from folio_llm.params import load_params
    from folio_llm.unused import review_template

    params = load_params(params_path)
    template = review_template(params) or frozenset()
    chosen_on, checked_on = told_pairs(choose, choose_meta, template), told_pairs(check, check_meta, template)
    per_field = thresholds_per_field(chosen_on, false_alarms)
    click.echo("per field: " + ", ".join(f"{name} {below}" for name, below in per_field.items()))
    one = params.eval.review_below
    for label, thresholds in ((f"one threshold {one}", {}), ("per field", per_field)):
        for split, pairs in (("choose", chosen_on), ("check", checked_on)):
            recall, alarms = recall_and_false_alarms(pairs, thresholds, one)
            click.echo(f"{label}: {split} recall {recall:.3f} false alarms {alarms:.3f}")


if __name__ == "__main__":
    main()

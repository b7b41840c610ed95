"""How high can the macro field score go on this test split, whatever the model?

Scores three made-up answer sets with the project's metric against the real references:

- ``copy+majority``: every field the prompt tells copied exactly; every field it does not tell
  (languages, resource type, mode of issuance, classifications) set to its most common value
  in the training targets: what a perfect copier with no cataloging knowledge gets;
- ``copy+infer-but-classify``: told fields copied, untold fields right, except classification
  numbers, which no prompt tells and no model can derive from the description: an empty list;
- ``perfect``: the references themselves (1.0 by construction; a check of the metric).

    python benchmarks/quality_ceiling.py [--data data/datasets/chat]

A model at 0.95 would have to beat ``copy+infer-but-classify`` on the fields it can know.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def majority_values(train_rows: list[dict], fields: list[str]) -> dict:
    """Each field's most common value in the training answers (absent counts as a value)."""
    counts = {f: Counter() for f in fields}
    for row in train_rows:
        answer = json.loads(row["messages"][-1]["content"])
        for field in fields:
            counts[field][json.dumps(answer.get(field), sort_keys=True)] += 1
    return {f: json.loads(c.most_common(1)[0][0]) for f, c in counts.items()}


def with_untold(reference: dict, untold: list[str], values: dict) -> dict:
    answer = dict(reference)
    for field in untold:
        if values.get(field) is None:
            answer.pop(field, None)
        else:
            answer[field] = values[field]
    return answer


@click.command()
@click.option("--data", "data_dir", default=str(REPO / "data" / "datasets" / "chat"), show_default=True,
              help="Chat-layout folder with train.jsonl and test.jsonl (meta/ beside it).")
def main(data_dir):
    from folio_llm.splits import load_test_rows
    from folio_llm.evaluation.scoring import score
    from folio_llm.jsonl import load_jsonl

    data_dir = Path(data_dir)
    rows, meta = load_test_rows(data_dir / "test.jsonl")
    if meta is None:
        raise click.UsageError(f"no meta rows beside {data_dir / 'test.jsonl'}")
    references = [json.loads(r["messages"][-1]["content"]) for r in rows]
    untold_fields = sorted({f for m in meta for f in m["inferred"]})
    majority = majority_values(load_jsonl(data_dir / "train.jsonl"), untold_fields)
    answer_sets = {
        "copy+majority": [with_untold(ref, m["inferred"], majority) for ref, m in zip(references, meta)],
        "copy+infer-but-classify": [with_untold(ref, [f for f in m["inferred"] if f == "classifications"],
                                                {"classifications": []}) for ref, m in zip(references, meta)],
        "perfect": references,
    }
    print(f"{len(rows)} test rows; untold fields: {', '.join(untold_fields)}")
    print("majority values: " + ", ".join(f"{f}={json.dumps(v, ensure_ascii=False)}" for f, v in majority.items()))
    reports = {name: score([json.dumps(a) for a in answers], [json.dumps(r) for r in references],
                           transcribed=[m["transcribed"] for m in meta], inferred=[m["inferred"] for m in meta],
                           n_boot=0)
               for name, answers in answer_sets.items()}
    fields = next(iter(reports.values()))["macro_fields"]
    print(f"{'field':<22}" + "".join(f"{name:>26}" for name in reports))
    for field in fields:
        print(f"{field:<22}" + "".join(f"{r['fields'][field]['score']:>26.3f}" for r in reports.values()))
    for key in ("macro", "macro_transcribed", "macro_inferred"):
        print(f"{key:<22}" + "".join(f"{r[key]:>26.3f}" for r in reports.values()))
    print(" ".join(f"{name}_macro={r['macro']:.3f}" for name, r in reports.items()))


if __name__ == "__main__":
    main()

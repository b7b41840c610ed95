"""What the copy constraint costs: the share of the reference values it lets be written.

For every row of the dataset's splits, writes the reference answer under the constraint
(``eval.copy_fields``, against that row's own description, in the answer's order: the names
written before count for the repeat limit) and counts the values it refuses, with or without
the trailing ISBD punctuation the scorer ignores. A value the constraint refuses is one no
model can get right under it (a name the description does not tell in either form, a value it
does not tell word for word, one reaching over a part label: eval.copy_within_parts).

    python benchmarks/copy_coverage.py [--data data/datasets/chat] [--fields title,contributors.name] [--show 10]
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


@click.command()
@click.option("--data", "data_dir", default=str(REPO / "data" / "datasets" / "chat"), show_default=True,
              help="Chat-layout folder with train.jsonl, valid.jsonl and test.jsonl.")
@click.option("--fields", default="", help="Comma-separated paths (default: params.yaml's eval.copy_fields).")
@click.option("--show", default=8, show_default=True, help="Forbidden values to print per field.")
def main(data_dir, fields, show):
    from folio_llm.decoding.constraints import description
    from folio_llm.decoding.copy_constraint import copied_values
    from folio_llm.jsonl import load_jsonl
    from folio_llm.params import load_params
    from folio_llm.prompts import target_json
    from folio_llm.templates import part_labels

    params = load_params(REPO / "params.yaml")
    paths = fields.split(",") if fields else params.eval.copy_fields
    labels = part_labels(params.dataset) if params.eval.copy_within_parts else ()
    total, forbidden = Counter(), {p: [] for p in paths}
    rows = 0
    for split in ("train", "valid", "test"):
        for row in load_jsonl(Path(data_dir) / f"{split}.jsonl"):
            if "messages" not in row:
                continue
            rows += 1
            text, answer = description(row["messages"]), json.loads(row["messages"][-1]["content"])
            for path, value, allowed in copied_values(text, target_json(answer), paths, labels):
                total[path] += 1
                if not allowed:
                    forbidden[path].append((value, text))
    print(f"{rows} rows ({data_dir})")
    print("| field | values | allowed | share |\n|---|---:|---:|---:|")
    for path in paths:
        allowed = total[path] - len(forbidden[path])
        print(f"| {path} | {total[path]} | {allowed} | {allowed / max(total[path], 1):.3f} |")
    for path in paths:
        for value, text in forbidden[path][:show]:
            print(f"{path}: {value!r}\n    in: {text[:200]!r}")


if __name__ == "__main__":
    main()

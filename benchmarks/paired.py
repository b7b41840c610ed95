"""Two runs' answers to the same rows, paired per row: what a lever changed, beyond the noise.

BEFORE and AFTER are prediction files (`folio-llm evaluate --predictions`, `data/predictions/tuned.jsonl`)
or folders of them (`benchmarks/styles.py --predictions`: one file per style, compared file by
file and then all together). Prints the mean per-row difference of the told (or inferred) fields'
score with its 95% bootstrap interval, the rows better and worse, FOLIO-valid answers before and
after, and each row that moved.

    python benchmarks/paired.py BEFORE AFTER [--kind told|inferred] [--meta data/datasets/meta/test.jsonl] [--show 20]

``--meta`` gives the told fields of predictions written before each row carried them.

A lever moves a few answers of a hundred, less than the interval of either run's macro; both
runs answer the same rows, so the per-row difference is what to judge, and what
benchmarks/RESULTS.md quotes as "paired per row".
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from folio_llm.evaluation.scoring import MACRO_FIELDS, TARGET_FIELD


class PairingError(ValueError):
    """Predictions that cannot be paired (a row without its told fields, no rows in common)."""


def row_score(row: dict, kind: str = "told") -> float | None:
    """The mean score of the row's ``kind`` fields ("told": the target fields its description
    tells; "inferred": those the model infers), None where it has none."""
    if "fields" not in row:
        raise PairingError(f"row {row.get('id')!r} holds no field scores (not a scored predictions file?)")
    targets = row.get(kind)
    if targets is None:
        raise PairingError(f"row {row.get('id')!r} does not say which fields are {kind} "
                           "(predictions written before rows carried them)")
    scores = [row["fields"][name]["score"] for name in MACRO_FIELDS
              if TARGET_FIELD[name] in targets and name in row["fields"]]
    return sum(scores) / len(scores) if scores else None


@dataclass
class Paired:
    """``after`` minus ``before``, per row both answered and scored."""

    differences: list[float]
    moved: list[tuple[str, str | None, float, float]] = field(default_factory=list)  # id, style, before, after
    folio_valid: tuple[int, int] = (0, 0)

    @property
    def mean(self) -> float:
        return sum(self.differences) / len(self.differences) if self.differences else 0.0

    @property
    def better(self) -> int:
        return sum(d > 1e-9 for d in self.differences)

    @property
    def worse(self) -> int:
        return sum(d < -1e-9 for d in self.differences)

    def interval(self, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
        """95% percentile interval of the mean difference, rows resampled with replacement (the
        resampling of the evaluate stage's own intervals, over one column)."""
        import numpy as np

        from folio_llm.evaluation.bootstrap import intervals

        if not self.differences:
            return 0.0, 0.0
        column = np.asarray(self.differences)[:, None]
        low, high = intervals(column, {"mean": np.ones_like(column, dtype=bool)}, draws, seed)["mean"]
        return low, high


def paired(before: list[dict], after: list[dict], kind: str = "told") -> Paired:
    """Rows of ``before`` and ``after`` (prediction rows) paired by id."""
    later = {row["id"]: row for row in after}
    common = [row for row in before if row["id"] in later]
    if not common:
        raise PairingError("the two runs answered no row in common (not the same split?)")
    result = Paired([], folio_valid=(sum(bool(r.get("folio_valid")) for r in common),
                                     sum(bool(later[r["id"]].get("folio_valid")) for r in common)))
    for row in common:
        old, new = row_score(row, kind), row_score(later[row["id"]], kind)
        if old is None or new is None:
            continue
        result.differences.append(new - old)
        if abs(new - old) > 1e-9:
            result.moved.append((row["id"], row.get("style"), old, new))
    return result


def with_fields_told(rows: list[dict], meta: list[dict]) -> list[dict]:
    """Prediction rows given the told and inferred fields of their split's meta rows (for
    predictions written before rows carried them)."""
    fields = {m["id"]: m for m in meta}
    return [{**row, "told": fields[row["id"]]["transcribed"], "inferred": fields[row["id"]]["inferred"]}
            if "told" not in row and row["id"] in fields else row for row in rows]


def _pairs(before: Path, after: Path) -> list[tuple[str, Path, Path]]:
    if before.is_dir() != after.is_dir():
        raise click.UsageError("BEFORE and AFTER must both be files or both be folders")
    if not before.is_dir():
        return [(before.stem, before, after)]
    names = sorted(p.name for p in before.glob("*.jsonl") if (after / p.name).exists())
    if not names:
        raise click.UsageError(f"no prediction file of {before} has a namesake in {after}")
    return [(Path(name).stem, before / name, after / name) for name in names]


@click.command()
@click.argument("before", type=click.Path(exists=True, path_type=Path))
@click.argument("after", type=click.Path(exists=True, path_type=Path))
@click.option("--kind", type=click.Choice(["told", "inferred"]), default="told", show_default=True,
              help="Which fields of each row: those its description tells, or those the model infers.")
@click.option("--meta", "meta_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The split's meta file (data/datasets/meta/<split>.jsonl): the told fields of "
                   "evaluate-stage predictions written before rows carried them.")
@click.option("--show", default=20, show_default=True, help="Rows that moved to list per file.")
def main(before, after, kind, meta_path, show):
    """Compare two runs' answers to the same rows, paired per row."""
    from folio_llm.jsonl import load_jsonl

    meta = load_jsonl(meta_path) if meta_path else None

    def rows(path: Path) -> list[dict]:
        loaded = load_jsonl(path)
        return with_fields_told(loaded, meta) if meta else loaded

    def line(name: str, result: Paired) -> str:
        low, high = result.interval()
        return (f"{name}: {kind} per row {result.mean:+.4f} [{low:+.4f}, {high:+.4f}], {result.better} better / "
                f"{result.worse} worse of {len(result.differences)}; FOLIO-valid {result.folio_valid[0]} -> "
                f"{result.folio_valid[1]}")

    everything = Paired([])
    try:
        for name, old, new in _pairs(before, after):
            result = paired(rows(old), rows(new), kind)
            click.echo(line(name, result))
            for row_id, style, was, now in result.moved[:show]:
                click.echo(f"    {row_id} ({style}): {was:.3f} -> {now:.3f}")
            everything.differences += result.differences
            everything.folio_valid = tuple(a + b for a, b in zip(everything.folio_valid, result.folio_valid))
    except PairingError as error:
        hint = "" if meta else "; for the evaluate stage's predictions, --meta data/datasets/meta/<split>.jsonl gives them"
        click.echo(f"error: {error}{hint}", err=True)
        sys.exit(1)
    if before.is_dir():
        click.echo(line("all", everything))


if __name__ == "__main__":
    main()

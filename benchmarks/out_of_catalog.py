"""Out-of-catalog test: train without one or two source catalogs, test on their records.

The default run's test split comes from the same catalogs as its training rows. Here the MARC
records of the held-out catalogs (``manifest.jsonl`` names each record's source repository) are
removed before the pipeline runs: `dvc repro evaluate` runs in a copy of the repo whose
``source.path`` points at the remaining records, then the held-out records go through the
project's own commands (marc-to-instances, denormalize, build-dataset with every row in the test
split) and `folio-llm evaluate` scores the tuned adapter on them.

    python benchmarks/out_of_catalog.py [--hold-out trln/marc-to-argot --hold-out folio-org/mod-reservoir]
                                        [--work /tmp/folio-ooc] [--rows 100]

Re-running with the same --work reuses what is done (dvc repro skips up-to-date stages).
Prints the in-catalog and out-of-catalog macro, told and inferred scores with their intervals.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import yaml

REPO = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".pytest_cache", "__pycache__", "models", "metrics", "reports", "dvclive", "build", "data",
        "dvc.lock"}


def split_marc(bibs: Path, manifest: Path, held_out: set[str], held_in_path: Path, held_out_path: Path) -> dict:
    """Write the records of the held-out repositories and the rest to two MARC files."""
    sources = [json.loads(line)["repo"] for line in manifest.read_text(encoding="utf-8").splitlines() if line]
    records = bibs.read_bytes().split(b"\x1d")[:-1]
    if len(records) != len(sources):
        raise click.ClickException(f"{bibs}: {len(records)} records but {manifest} lists {len(sources)}")
    unknown = held_out - set(sources)
    if unknown:
        raise click.ClickException(f"--hold-out: no records from {', '.join(sorted(unknown))} in {manifest}")
    held_in_path.parent.mkdir(parents=True, exist_ok=True)
    held_out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(held_in_path, "wb") as kept, open(held_out_path, "wb") as out:
        for record, source in zip(records, sources):
            (out if source in held_out else kept).write(record + b"\x1d")
    counts = {"held_in": sum(s not in held_out for s in sources), "held_out": sum(s in held_out for s in sources)}
    return counts


def run(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    click.echo(f"$ {' '.join(args)}", err=True)
    subprocess.run(list(args), cwd=cwd, env=env, check=True)


def copy_repo(dest: Path) -> None:
    def ignore(folder, names):
        return {n for n in names if n in SKIP or n.endswith(".egg-info")} | (
            {"cache", "tmp"} if Path(folder).name == ".dvc" else set())

    shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(REPO / "data" / "raw" / "folio", dest / "data" / "raw" / "folio", dirs_exist_ok=True)
    if (REPO / "models" / "base").is_dir() and not (dest / "models" / "base").exists():
        shutil.copytree(REPO / "models" / "base", dest / "models" / "base")


def summary(metrics: Path, label: str) -> str:
    tuned = json.loads(metrics.read_text(encoding="utf-8"))
    tuned = tuned.get("tuned", tuned)
    parts = [f"{label}: n={tuned['n']}"]
    for name, key in (("macro", "macro"), ("told", "macro_transcribed"), ("inferred", "macro_inferred")):
        low, high = tuned[f"{key}_ci"]
        parts.append(f"{name}={tuned[key]:.3f} [{low:.3f}, {high:.3f}]")
    parts.append(f"parse={tuned['parse_rate']:.2f} folio_valid={tuned['folio_schema_valid_rate']:.2f}")
    return " ".join(parts)


@click.command()
@click.option("--hold-out", "held_out", multiple=True, default=("trln/marc-to-argot", "folio-org/mod-reservoir"),
              show_default=True, help="Source repository (manifest.jsonl 'repo') to keep out of training.")
@click.option("--work", default="/tmp/folio-ooc", show_default=True, type=click.Path(file_okay=False),
              help="Working folder: the repo copy and the held-out test set.")
@click.option("--rows", default=100, show_default=True, help="Held-out test rows to score.")
def main(held_out, work, rows):
    work = Path(work)
    repo = work / "folio-llm"
    copy_repo(repo)
    counts = split_marc(REPO / "data" / "raw" / "marc" / "bibs.mrc", REPO / "data" / "raw" / "marc" / "manifest.jsonl",
                        set(held_out), repo / "data" / "held_in" / "bibs.mrc", work / "held_out" / "bibs.mrc")
    click.echo(f"records: {counts['held_in']} in training catalogs, {counts['held_out']} held out "
               f"({', '.join(held_out)})", err=True)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["source"]["path"] = "data/held_in"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    folio = repo / "data" / "raw" / "folio"
    test_params = {**params, "source": {**params["source"], "reference_data": str(folio / "reference-data")}}
    test_params["dataset"] = {**params["dataset"], "split": {"train": 0.0, "valid": 0.0, "test": 1.0}}
    out = work / "held_out"
    (out / "params.yaml").write_text(yaml.safe_dump(test_params, sort_keys=False, allow_unicode=True),
                                     encoding="utf-8")
    cli = [str(Path(sys.executable).parent / "folio-llm")]
    run(*cli, "marc-to-instances", str(out / "bibs.mrc"), "--rules", str(folio / "mapping-rules" / "marc-bib.json"),
        "--reference-data", str(folio / "reference-data"), "--out", str(out / "instances.jsonl"),
        "--rejects", str(out / "rejects-instances.jsonl"), cwd=out)
    run(*cli, "denormalize", str(out / "instances.jsonl"), "--reference-data", str(folio / "reference-data"),
        "--out", str(out / "denormalized.jsonl"), "--rejects", str(out / "rejects-denormalize.jsonl"),
        "--params", str(out / "params.yaml"), cwd=out)
    run(*cli, "build-dataset", str(out / "denormalized.jsonl"), "--out-dir", str(out / "datasets"),
        "--report", str(out / "dataset.json"), "--summary", str(out / "dataset.md"),
        "--params", str(out / "params.yaml"), cwd=out)

    run(sys.executable, "-m", "dvc", "repro", "evaluate", cwd=repo)
    # the held-out rows are scored against the training catalogs' answers for the majority baseline
    shutil.copy(repo / "data" / "datasets" / "openai" / "train.jsonl", out / "datasets" / "openai" / "train.jsonl")
    run(*cli, "evaluate", "--model", str(repo / "models" / "base"), "--adapter", str(repo / "models" / "adapter"),
        "--data", str(out / "datasets" / "openai" / "test.jsonl"), "--out", str(out / "eval.json"),
        "--predictions", str(out / "predictions.jsonl"), "--limit", str(rows), "--schemas", str(folio / "schemas"),
        "--params", str(out / "params.yaml"), cwd=out)
    click.echo(summary(repo / "metrics" / "eval.json", "in-catalog test split"))
    click.echo(summary(out / "eval.json", f"out-of-catalog ({', '.join(held_out)})"))


if __name__ == "__main__":
    main()

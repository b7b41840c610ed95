"""Stage `dataset` (`build-dataset`): prompt/target pairs and the seeded split in every layout."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors
from folio_llm.sections import load_sections
from folio_llm.sections.dataset import DatasetParams


@click.command("build-dataset")
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(dir_okay=False))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Writes <layout>/<split>.jsonl here.")
@click.option("--report", default=paths.DATASET_REPORT, show_default=True, type=click.Path(dir_okay=False))
@click.option("--summary", default=paths.DATASET_SUMMARY, show_default=True, type=click.Path(dir_okay=False))
@PARAMS_OPTION
@friendly_errors
def build_dataset(input_path, out_dir, report, summary, params_path):
    """Build prompt/target pairs and the seeded train/valid/test split in every layout
    (openai, chat, completions, text) from denormalized records."""
    from folio_llm.dataset import build_examples, dataset_report, write_layouts, write_report
    from folio_llm.jsonl import load_jsonl

    params = load_sections(params_path, seed=int, dataset=DatasetParams)
    if not Path(input_path).is_file():
        raise ValueError(f"input not found: {input_path}")
    result = build_examples(load_jsonl(input_path), params.dataset, params.seed)
    if not any(result.splits.values()):
        raise ValueError(f"no rows could be built from {input_path}")
    write_layouts(result, out_dir)
    stats = dataset_report(result, params.dataset)
    write_report(stats, report, summary)
    counts = stats["counts"]
    click.echo(f"{stats['rows']} rows: {counts['train']} train, {counts['valid']} valid, {counts['test']} test "
               f"({stats['duplicates_removed']} duplicates removed)")

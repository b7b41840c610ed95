"""Stage `denormalize`: reference UUIDs -> labels, only the fields params.denormalize keeps."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors, summarize
from folio_llm.sections import load_sections
from folio_llm.sections.denormalize import DenormalizeParams


@click.command("denormalize")
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(dir_okay=False))
@click.option("--reference-data", required=True, type=click.Path(file_okay=False), help="Folder of reference data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Denormalized records, JSON Lines.")
@click.option("--rejects", default=paths.DENORMALIZE_REJECTS, show_default=True, type=click.Path(dir_okay=False))
@click.option("--report", default=None, type=click.Path(dir_okay=False), help="Counts and field coverage (JSON).")
@PARAMS_OPTION
@friendly_errors
def denormalize(input_path, reference_data, out, rejects, report, params_path):
    """Replace reference UUIDs by labels (instanceTypeId -> instanceTypeText, ...) and keep
    the fields named in params.denormalize."""
    from folio_llm.folio.reference import ReferenceData
    from folio_llm.pipeline import denormalize_file, write_stage_report
    from folio_llm.records import Denormalizer

    settings = load_sections(params_path, denormalize=DenormalizeParams).denormalize
    denormalizer = Denormalizer(
        ReferenceData.load(reference_data), settings.fields, settings.identifier_types, settings.unicode_form
    )
    if not Path(input_path).is_file():
        raise ValueError(f"input not found: {input_path}")
    counts = denormalize_file(input_path, out, rejects, denormalizer)
    if report:
        write_stage_report(report, counts, **denormalizer.stats.as_dict())
    summarize(counts, input_path, rejects)

"""Source records -> FOLIO Instances: stage `instances`, `marc-to-instances` and `fetch-folio`."""

from __future__ import annotations

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors, summarize
from folio_llm.sections import load_sections
from folio_llm.sections.source import SourceParams


@click.command("marc-to-instances")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--rules", required=True, type=click.Path(dir_okay=False), help="FOLIO MARC-bib mapping rules JSON.")
@click.option("--reference-data", required=True, type=click.Path(file_okay=False), help="Folder of reference data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Instances, one JSON per line.")
@click.option("--rejects", required=True, type=click.Path(dir_okay=False), help="Unusable records with the reason.")
@friendly_errors
def marc_to_instances(inputs, rules, reference_data, out, rejects):
    """Map MARC records (binary MARC21, MARCXML, OAI-PMH; folders too) to FOLIO Instances
    with FOLIO's mapping rules. Prints `N read, M written, K rejected`."""
    from folio_llm.sources import convert, source_items

    counts = convert(source_items("marc", list(inputs), rules, reference_data), out, rejects)
    summarize(counts, ", ".join(inputs), rejects)


@click.command("instances")
@PARAMS_OPTION
@click.option("--out", default=paths.INSTANCES, show_default=True, type=click.Path(dir_okay=False))
@click.option("--rejects", default=paths.INSTANCES_REJECTS, show_default=True, type=click.Path(dir_okay=False))
@click.option("--report", default=paths.INSTANCES_REPORT, show_default=True, type=click.Path(dir_okay=False))
@friendly_errors
def instances(params_path, out, rejects, report):
    """Stage `instances`: read params.source, draw the seeded sample, write Instances."""
    from folio_llm.pipeline import write_stage_report
    from folio_llm.sources import convert, source_items

    params = load_sections(params_path, seed=int, source=SourceParams)
    source = params.source
    items = source_items(source.kind, [source.path], source.rules, source.reference_data)
    counts = convert(items, out, rejects, source.sample_size, params.seed)
    write_stage_report(report, counts, kind=source.kind, path=source.path,
                       sample_size=source.sample_size, seed=params.seed)
    summarize(counts, source.path, rejects)


@click.command("fetch-folio")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Snapshot folder (replaced when it holds an earlier snapshot).")
@click.option("--sample-size", type=click.IntRange(min=0), default=None,
              help="Instances to draw (0 = all) [default: params.source.sample_size].")
@click.option("--seed", type=int, default=None, help="Seed of the draw [default: params.seed].")
@click.option("--query", default=None, help="CQL filter, e.g. 'source==MARC' [default: params.source.query].")
@click.option("--strategy", type=click.Choice(["uuid", "offset"]), default="uuid", show_default=True,
              help="'uuid': random id boundaries (one index seek each); 'offset': random positions "
                   "(exactly uniform, slow on large inventories).")
@click.option("--page-size", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neighbouring records taken per random draw.")
@click.option("--attempts", type=click.IntRange(min=1), default=4, show_default=True,
              help="Tries per request on 5xx, resets and timeouts.")
@click.option("--backoff", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds before the second try, doubling after.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds per request.")
@PARAMS_OPTION
@friendly_errors
def fetch_folio(out, sample_size, seed, query, strategy, page_size, attempts, backoff, timeout, params_path):
    """Draw a seeded random sample of Instances from a live FOLIO tenant and save it with the
    tenant's reference data and MARC mapping rules as a snapshot folder (source.kind: folio-api).

    Credentials come from the environment only: FOLIO_URL, FOLIO_TENANT, FOLIO_USERNAME,
    FOLIO_PASSWORD. Track the snapshot with `dvc add`."""
    from folio_llm.folio.api import RetryPolicy
    from folio_llm.folio.snapshot import fetch_snapshot, snapshot_notes

    params = load_sections(params_path, seed=int, source=SourceParams)
    manifest = fetch_snapshot(
        out, sample_size=params.source.sample_size if sample_size is None else sample_size,
        seed=params.seed if seed is None else seed, query=params.source.query if query is None else query,
        strategy=strategy, page_size=page_size, retry=RetryPolicy(attempts, backoff, timeout))
    click.echo(f"{manifest['instances']} instances of {manifest['matching']} matching ({manifest['strategy']}), "
               f"{len(manifest['reference_data'])} kinds of reference data, "
               f"{'mapping rules' if manifest['mapping_rules'] else 'no mapping rules'} -> {out} "
               f"({manifest['requests']} requests)")
    for note in snapshot_notes(manifest):
        click.echo(f"warning: {note}", err=True)
    click.echo(f"next: dvc add {out}")

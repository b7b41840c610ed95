"""`folio-llm <command>`: the pipeline's steps as one console command.

Each stage's command lives in ``folio_llm.commands.<stage>``; the DVC stages run those modules
through the thin files in ``scripts/``, so a stage's code dependencies stay exact.
"""

from __future__ import annotations

import click

from folio_llm.commands.base import base
from folio_llm.commands.dataset import build_dataset
from folio_llm.commands.denormalize import denormalize
from folio_llm.commands.evaluate import evaluate_stage
from folio_llm.commands.evaluate_model import evaluate
from folio_llm.commands.export import export
from folio_llm.commands.instances import fetch_folio, instances, marc_to_instances
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors
from folio_llm.commands.predict import predict
from folio_llm.commands.serve import serve
from folio_llm.commands.train import inspect_batch, train
from folio_llm.params import load_params

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="folio-llm")
def main():
    """Teach an LLM to catalog: FOLIO Instance training data from MARC or FOLIO JSON.

    The DVC pipeline (dvc.yaml) runs these commands in order; run them by hand to try your own
    files. Settings live in params.yaml, one section per stage.
    """


for command in (marc_to_instances, instances, denormalize, build_dataset, base, train, inspect_batch, evaluate,
                evaluate_stage, fetch_folio, export, predict, serve):
    main.add_command(command)


@main.command("check-params")
@PARAMS_OPTION
@friendly_errors
def check_params(params_path):
    """Validate params.yaml and print the settings in force (defaults filled in)."""
    import yaml

    from folio_llm.params import as_dict

    click.echo(yaml.safe_dump(as_dict(load_params(params_path)), sort_keys=False, allow_unicode=True), nl=False)


@main.command("precision")
@click.option("--refresh", is_flag=True, help="Measure again (on an idle machine) instead of reading the cache.")
def precision(refresh):
    """Which arithmetic is faster on this machine, fp32 or bf16, as 'auto' precision uses it
    (measured once per machine, cached)."""
    from folio_llm.precision import cache_path, cpu_has_bf16, probe

    result = probe(refresh=refresh)
    click.echo(f"{result['machine']} (measured {result['measured']}; {cache_path()})")
    for kind, figures in result.items():
        if isinstance(figures, dict):
            chosen = figures["fastest"] if cpu_has_bf16() else "fp32 (no bf16 instructions)"
            click.echo(f"{kind}: fp32 {figures['fp32_gflops']} GFLOP/s, bf16 {figures['bf16_gflops']} GFLOP/s "
                       f"-> auto uses {chosen}")


if __name__ == "__main__":
    main()

"""Stage `base`: the base model as a Hugging Face folder."""

from __future__ import annotations

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors
from folio_llm.sections import load_sections
from folio_llm.sections.model import ModelParams


@click.command("base")
@PARAMS_OPTION
@click.option("--out", default=paths.BASE, show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def base(params_path, out):
    """Stage `base`: write params.model.base as a Hugging Face folder (config, safetensors,
    tokenizer with chat template)."""
    from folio_llm.models import materialize_base

    model = load_sections(params_path, model=ModelParams).model
    path = materialize_base(model.base, out, model.dtype)
    click.echo(f"{model.base} -> {path}")

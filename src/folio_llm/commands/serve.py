"""`folio-llm serve`: the cataloger's web page and an OpenAI-compatible API over one GGUF file."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, SCHEMAS_OPTION, friendly_errors
from folio_llm.params import load_params


@click.command("serve")
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False),
              help="A .gguf file [default: what `dvc repro` made: models/gguf/<export.name>-<export.types[0]>.gguf].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0 opens it to the network).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--copy/--no-copy", default=None,
              help="The page's copy constraint on told fields [default: params.eval.copy_constraint].")
@click.option("--reference-data", default=None, type=click.Path(file_okay=False),
              help="The tenant's reference data [default: params.source.reference_data].")
@click.option("--examples", "examples_path", default=paths.TEST_SPLIT, show_default=True,
              type=click.Path(dir_okay=False), help="Test split whose descriptions the page offers as examples.")
@click.option("--jobs", "jobs_dir", default=paths.JOBS, show_default=True, type=click.Path(file_okay=False),
              help="Folder of the batch jobs' store (jobs.sqlite3): a restart resumes unfinished jobs and keeps "
                   "finished ones and the records created in FOLIO.")
@SCHEMAS_OPTION
@PARAMS_OPTION
@friendly_errors
def serve(model_path, host, port, copy, reference_data, examples_path, jobs_dir, schemas, params_path):
    """Serve the model: a web page at / (describe an item, review and edit the proposed FOLIO
    Instance, create it in FOLIO; batch files) and an OpenAI-compatible API at /v1
    (chat completions with JSON-schema response formats, models).

    FOLIO credentials (FOLIO_URL, FOLIO_TENANT, FOLIO_USERNAME, FOLIO_PASSWORD) and the API key
    clients must send (FOLIO_LLM_API_KEY, optional) come from the environment only."""
    import os

    import uvicorn

    from folio_llm.predict import exported_gguf
    from folio_llm.serve import create_app, example_descriptions

    params = load_params(params_path)
    model = Path(model_path) if model_path else exported_gguf(params)
    if not model.is_file():
        raise ValueError(f"no GGUF file at {model} (run `dvc repro export`, or pass --model FILE.gguf)")
    app = create_app(model, params, reference_dir=reference_data or params.source.reference_data,
                     schemas_dir=schemas, examples=example_descriptions(examples_path), jobs_dir=jobs_dir, copy=copy,
                     api_key=os.environ.get("FOLIO_LLM_API_KEY") or None)
    click.echo(f"serving {model} at http://{host}:{port}/ (page) and http://{host}:{port}/v1 (OpenAI API)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")

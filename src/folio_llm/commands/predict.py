"""`folio-llm predict`: a FOLIO Instance record for each description, optionally created in FOLIO."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm.commands.options import PARAMS_OPTION, SCHEMAS_OPTION, friendly_errors
from folio_llm.params import load_params


@click.command("predict")
@click.argument("descriptions", nargs=-1)
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="A .jsonl file (key 'description' or 'prompt', or OpenAI chat rows) or a .csv file "
                   "(column 'description' or 'prompt'); answers come out as JSON Lines.")
@click.option("--model", "model_path", default=None, type=click.Path(),
              help="A Hugging Face folder or a .gguf file [default: what `dvc repro` made: models/merged, "
                   "else models/base + models/adapter; for llama.cpp models/gguf/<export.name>-<export.types[0]>.gguf].")
@click.option("--backend", type=click.Choice(["transformers", "llama.cpp", "openai"]), default=None,
              help="[default: llama.cpp for a .gguf file, else transformers]; openai: the model named by --model "
                   "behind the OpenAI-compatible API at --base-url (key from OPENAI_API_KEY)")
@click.option("--base-url", default=None, help="openai: the API's base URL, e.g. http://127.0.0.1:8000/v1.")
@click.option("--constrained/--no-constrained", default=None,
              help="Keep answers to the JSON shape of the targets [default: params.eval.constrained].")
@click.option("--copy/--no-copy", default=None,
              help="Hold told fields (params.eval.copy_fields) to verbatim spans of the description "
                   "[default: params.eval.copy_constraint].")
@click.option("--folio-ready", is_flag=True,
              help="Labels back to the tenant's reference UUIDs, source FOLIO, checked against FOLIO's Instance schema.")
@click.option("--reference-data", default=None, type=click.Path(file_okay=False),
              help="The tenant's reference data: its labels for --folio-ready, and the only type labels "
                   "decoding may write (params.eval.tenant_labels) [default: params.source.reference_data].")
@SCHEMAS_OPTION
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write records here instead of stdout.")
@click.option("--rejects", default=None, type=click.Path(dir_okay=False),
              help="Unusable lines and answers with the reason and the model's answer (JSON Lines).")
@click.option("--post", is_flag=True,
              help="With --folio-ready: create each record in the tenant named by FOLIO_URL, FOLIO_TENANT, "
                   "FOLIO_USERNAME, FOLIO_PASSWORD. A dry run (prints the request) unless --yes.")
@click.option("--yes", is_flag=True, help="With --post: really send the create requests.")
@PARAMS_OPTION
@friendly_errors
def predict(descriptions, input_path, model_path, backend, base_url, constrained, copy, folio_ready, reference_data, schemas,
            out, rejects, post, yes, params_path):
    """Write a FOLIO Instance record (JSON) for each description:

    \b
        folio-llm predict "For Vacancies in certain judgeships. Published in 1935 by ..."

    The prompt is the one the model was trained on (params.dataset.system_prompts[0] and the
    model's chat template); decoding is greedy. Lines that cannot be used are reported on
    stderr with their number, and the rest go on."""
    import contextlib

    from folio_llm.checking import AnswerChecks
    from folio_llm.decoding.constraints import decoding_settings
    from folio_llm.jsonl import JsonlWriter, dumps
    from folio_llm.predict import BadInput, FolioMapper, answered, read_requests

    if not descriptions and not input_path:
        raise click.UsageError("give a description or --input FILE")
    if post and not folio_ready:
        raise click.UsageError("--post needs --folio-ready (FOLIO takes reference UUIDs, not labels)")
    params = load_params(params_path)
    settings = params.eval
    folio = FolioMapper(reference_data or params.source.reference_data, schemas) if folio_ready else None
    backend, model, adapter = _model(backend, model_path, base_url, params)
    decoding = decoding_settings(params, constrained, copy, reference_data)

    read = written = rejected = 0
    with contextlib.ExitStack() as stack:
        reject_log = stack.enter_context(JsonlWriter(rejects)) if rejects else None
        records = stack.enter_context(JsonlWriter(out)) if out else None
        tenant = None
        if post and yes:
            from folio_llm.folio.api import FolioApi

            tenant = stack.enter_context(FolioApi.connect())

        def reject(where: str, reason: str, **detail) -> None:
            nonlocal rejected
            rejected += 1
            click.echo(f"rejected: {where}: {reason}", err=True)
            if reject_log:
                reject_log.write({"where": where, "reason": reason, **detail})

        requests = []
        for item in read_requests(descriptions, input_path, params.dataset.system_prompts[0]):
            read += 1
            if isinstance(item, BadInput):
                reject(item.where, item.reason)
            else:
                requests.append(item)
        if requests:
            generator = _generator(backend, base_url, model, adapter, settings, decoding)
            stack.callback(generator.close)
            for request, answer, checked in answered(generator, requests, folio, checks=AnswerChecks.of(params)):
                for warning in checked.lines():
                    click.echo(f"warning: {request.where}: {warning}", err=True)
                if checked.usable is None:
                    reject(request.where, checked.error, description=request.description, output=answer)
                    continue
                written += 1
                if records:
                    records.write(checked.usable)
                else:
                    click.echo(dumps(checked.usable))
                if post:
                    _post(request.where, checked.usable, tenant)
    if input_path or rejected:
        click.echo(f"{read} read, {written} written, {rejected} rejected", err=True)
    if not written:
        raise ValueError("no record written (reasons above)")


def _model(backend: str | None, model_path: str | None, base_url: str | None, params):
    """(backend, model, adapter): the model named, or the pipeline's own (GGUF, else merged,
    else base + adapter), and the backend that runs it."""
    from folio_llm.predict import default_model, exported_gguf, pick_backend

    if backend == "openai":
        if not (base_url and model_path):
            raise click.UsageError("--backend openai needs --base-url URL and --model NAME")
        return backend, model_path, None
    if model_path:
        model, adapter = Path(model_path), None
    else:
        model, adapter = default_model(backend, exported_gguf(params))
    return pick_backend(model, backend), model, adapter


def _generator(backend: str, base_url: str | None, model, adapter, settings, decoding):
    if backend == "openai":
        from folio_llm.decoding.chat_api import ChatApi

        return ChatApi(base_url, model, schema=decoding.schema, max_new_tokens=settings.max_new_tokens)
    from folio_llm.predict import Generator

    return Generator.load(model, adapter, backend, dtype=settings.dtype, batch_size=settings.batch_size,
                          max_new_tokens=settings.max_new_tokens, decoding=decoding, draft_tokens=settings.draft_tokens)


def _post(where: str, record: dict, tenant) -> None:
    """Create ``record`` in the tenant (``tenant`` a FolioApi session), or show the request."""
    from folio_llm.folio.api import post_instance

    result = post_instance(record, send=tenant is not None, client=tenant)
    if result.sent:
        click.echo(f"{where}: created instance {result.id}" + (f" (hrid {result.hrid})" if result.hrid else ""), err=True)
    else:
        click.echo(f"{where}: dry run (add --yes to send):\n{result.request_text()}", err=True)

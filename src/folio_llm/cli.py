"""`folio-llm <command>`: the pipeline's steps as one console command.

The DVC stages run the same click commands through the thin files in ``scripts/``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from folio_llm.params import ParamsError, load_params

PARAMS_OPTION = click.option(
    "--params", "params_path", default="params.yaml", show_default=True,
    type=click.Path(dir_okay=False), help="params.yaml to read (missing = embedded defaults).",
)

SCHEMAS_OPTION = click.option(
    "--schemas", default="data/raw/folio/schemas", show_default=True, type=click.Path(),
    help="FOLIO schemas folder, for the Instance-schema check (with params.source.reference_data).",
)

# Errors that mean bad input or settings: one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, OSError, ValueError)


def friendly_errors(command):
    """Turn bad-input exceptions into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            if os.environ.get("FOLIO_LLM_DEBUG"):
                raise
            message = str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and exc.filename:
                message = f"{exc.strerror}: {exc.filename}"
            click.echo(f"error: {message.splitlines()[0]}", err=True)
            sys.exit(1)

    return wrapper


def _summarize(counts, source: str, rejects: str) -> None:
    """Print `N read, M written, K rejected`; fail when nothing could be used."""
    click.echo(counts.line())
    if counts.written == 0:
        raise ValueError(f"no usable records in {source} (reasons in {rejects})")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="folio-llm")
def main():
    """Teach an LLM to catalog: FOLIO Instance training data from MARC or FOLIO JSON.

    The DVC pipeline (dvc.yaml) runs these commands in order; run them by hand to try your own
    files. Settings live in params.yaml, one section per stage.
    """


@main.command("marc-to-instances")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--rules", required=True, type=click.Path(dir_okay=False), help="FOLIO MARC-bib mapping rules JSON.")
@click.option("--reference-data", required=True, type=click.Path(file_okay=False), help="Folder of reference data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Instances, one JSON per line.")
@click.option("--rejects", required=True, type=click.Path(dir_okay=False), help="Unusable records with the reason.")
@friendly_errors
def marc_to_instances(inputs, rules, reference_data, out, rejects):
    """Map MARC records (binary MARC21, MARCXML, OAI-PMH; folders too) to FOLIO Instances
    with FOLIO's mapping rules. Prints `N read, M written, K rejected`."""
    from folio_llm.pipeline import convert, source_items

    counts = convert(source_items("marc", list(inputs), rules, reference_data), out, rejects)
    _summarize(counts, ", ".join(inputs), rejects)


@main.command("instances")
@PARAMS_OPTION
@click.option("--out", default="data/instances.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("--rejects", default="data/rejects/instances.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("--report", default="reports/instances.json", show_default=True, type=click.Path(dir_okay=False))
@friendly_errors
def instances(params_path, out, rejects, report):
    """Stage `instances`: read params.source, draw the seeded sample, write Instances."""
    from folio_llm.pipeline import convert, source_items, write_stage_report

    params = load_params(params_path)
    source = params.source
    items = source_items(source.kind, [source.path], source.rules, source.reference_data)
    counts = convert(items, out, rejects, source.sample_size, params.seed)
    write_stage_report(report, counts, kind=source.kind, path=source.path,
                       sample_size=source.sample_size, seed=params.seed)
    _summarize(counts, source.path, rejects)


@main.command("denormalize")
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(dir_okay=False))
@click.option("--reference-data", required=True, type=click.Path(file_okay=False), help="Folder of reference data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Denormalized records, JSON Lines.")
@click.option("--rejects", default="data/rejects/denormalize.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("--report", default=None, type=click.Path(dir_okay=False), help="Counts and field coverage (JSON).")
@PARAMS_OPTION
@friendly_errors
def denormalize(input_path, reference_data, out, rejects, report, params_path):
    """Replace reference UUIDs by labels (instanceTypeId -> instanceTypeText, ...) and keep
    the fields named in params.denormalize."""
    from folio_llm.folio.reference import ReferenceData
    from folio_llm.pipeline import denormalize_file, write_stage_report
    from folio_llm.records import Denormalizer

    settings = load_params(params_path).denormalize
    denormalizer = Denormalizer(
        ReferenceData.load(reference_data), settings.fields, settings.identifier_types, settings.unicode_form
    )
    if not Path(input_path).is_file():
        raise ValueError(f"input not found: {input_path}")
    counts = denormalize_file(input_path, out, rejects, denormalizer)
    if report:
        write_stage_report(report, counts, **denormalizer.stats.as_dict())
    _summarize(counts, input_path, rejects)


@main.command("build-dataset")
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(dir_okay=False))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Writes <layout>/<split>.jsonl here.")
@click.option("--report", default="reports/dataset.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--summary", default="reports/dataset.md", show_default=True, type=click.Path(dir_okay=False))
@PARAMS_OPTION
@friendly_errors
def build_dataset(input_path, out_dir, report, summary, params_path):
    """Build prompt/target pairs and the seeded train/valid/test split in every layout
    (openai, chat, completions, text) from denormalized records."""
    from folio_llm.dataset import build_examples, dataset_report, write_layouts, write_report
    from folio_llm.jsonl import load_jsonl

    params = load_params(params_path)
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


@main.command("base")
@PARAMS_OPTION
@click.option("--out", default="models/base", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def base(params_path, out):
    """Stage `base`: write params.model.base as a Hugging Face folder (config, safetensors,
    tokenizer with chat template)."""
    from folio_llm.models import materialize_base

    model = load_params(params_path).model
    path = materialize_base(model.base, out, model.dtype)
    click.echo(f"{model.base} -> {path}")


@main.command("train")
@PARAMS_OPTION
@click.option("--data", "data_dir", default="data/datasets/chat", show_default=True, type=click.Path(file_okay=False),
              help="Folder with train.jsonl and valid.jsonl (chat layout).")
@click.option("--base", "base_dir", default="models/base", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default="models/adapter", show_default=True, type=click.Path(file_okay=False))
@click.option("--checkpoints", default="models/checkpoints", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", default="metrics/train.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--live", default="dvclive/train", show_default=True, type=click.Path(file_okay=False),
              help="dvclive folder for the loss / learning-rate / tokens-per-second curves.")
@friendly_errors
def train(params_path, data_dir, base_dir, out, checkpoints, metrics, live):
    """Stage `train`: LoRA fine-tuning (params.train). Re-running after a kill resumes from
    the last checkpoint."""
    params = load_params(params_path)
    for path in (Path(data_dir) / "train.jsonl", Path(base_dir) / "config.json"):
        if not path.is_file():
            raise ValueError(f"not found: {path} (run the earlier stages first: dvc repro)")
    if params.train.backend == "mlx":
        from folio_llm.training.mlx_backend import train_mlx as run
    else:
        from folio_llm.training.trainer import train as run
    result = run(params.train, params.seed, data_dir, base_dir, out, checkpoints, metrics, live)
    click.echo(f"{result['steps']} steps, valid loss {result['valid_loss']}, {result['tokens_per_s']} tokens/s")


@main.command("inspect-batch")
@click.option("--data", "data_file", default="data/datasets/chat/train.jsonl", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--base", "base_dir", default="models/base", show_default=True, type=click.Path(file_okay=False))
@click.option("-n", "--rows", default=2, show_default=True, help="How many rows to show.")
@friendly_errors
def inspect_batch(data_file, base_dir, rows):
    """Print training rows as the model sees them: masked tokens (no loss) in [brackets] and
    dimmed, answer tokens (in the loss) plain."""
    from folio_llm.jsonl import load_jsonl
    from folio_llm.models import load_tokenizer
    from folio_llm.training.data import IGNORE, encode_chat

    tokenizer = load_tokenizer(base_dir)
    for number, row in enumerate(load_jsonl(data_file)[:rows], start=1):
        encoded = encode_chat(tokenizer, row["messages"])
        click.echo(f"--- row {number}: {len(encoded)} tokens, {encoded.answer_tokens} in the loss")
        masked = [t for t, label in zip(encoded.input_ids, encoded.labels) if label == IGNORE]
        answer = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
        click.echo(click.style("[" + tokenizer.decode(masked) + "]", dim=True) + tokenizer.decode(answer))


@main.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Base model folder (HF layout).")
@click.option("--adapter", "adapter_dir", default=None, type=click.Path(file_okay=False), help="LoRA adapter (peft layout).")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="Test split, OpenAI chat layout.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Metrics JSON.")
@click.option("--predictions", default=None, type=click.Path(dir_okay=False), help="Per-row outputs and field outcomes (JSONL).")
@click.option("--constrained/--no-constrained", default=None, help="JSON-schema constrained decoding (default: params.eval).")
@click.option("--copy/--no-copy", default=None,
              help="Copy-constrained decoding of params.eval.copy_fields (default: params.eval.copy_constraint).")
@click.option("--limit", default=None, type=int, help="Only the first N rows (default: params.eval.limit).")
@SCHEMAS_OPTION
@PARAMS_OPTION
@friendly_errors
def evaluate(model_dir, adapter_dir, data_path, out, predictions, constrained, copy, limit, schemas, params_path):
    """Generate answers for a test split and score them field by field."""
    from folio_llm.evaluation.run import folio_checks, load_test_rows, load_train_answers, write_metrics

    params = load_params(params_path)
    checks = folio_checks(schemas, params.source.reference_data)
    rows, meta = load_test_rows(data_path, params.eval.limit if limit is None else limit)
    result = _evaluate_one(params, checks, model_dir, adapter_dir, rows, meta, label="tuned" if adapter_dir else "base",
                           predictions=predictions, constrained=constrained, copy=copy,
                           train_answers=load_train_answers(data_path))
    write_metrics(out, result)


def _evaluate_one(params, checks, model_dir, adapter_dir, rows, meta, *, label: str, predictions,
                  constrained: bool | None = None, max_new_tokens: int | None = None,
                  train_answers: list[dict] | None = None, copy: bool | None = None) -> dict:
    """Load one model, answer the rows, score them; one line to the console. ``checks``:
    evaluation.run.folio_checks, loaded once per command."""
    from folio_llm.evaluation.generate import load_for_inference
    from folio_llm.evaluation.run import evaluate_model

    settings = params.eval
    folio_schema, reference = checks
    model, tokenizer = load_for_inference(model_dir, adapter_dir, settings.dtype)
    result = evaluate_model(model, tokenizer, rows, meta, batch_size=settings.batch_size,
                            max_new_tokens=max_new_tokens or settings.max_new_tokens, predictions_path=predictions,
                            logits_processor_factory=_constraint(params, tokenizer, constrained, copy), label=label,
                            folio_schema=folio_schema, reference_data=reference, train_answers=train_answers,
                            untold_targets=params.dataset.untold_targets)
    click.echo(f"{label}: {result['n']} rows, macro {result['macro']:.3f}, parse rate {result['parse_rate']:.3f}")
    return result


def _constraint(params, tokenizer, constrained: bool | None, copy: bool | None = None):
    """A logits-processor factory for constrained decoding (the JSON schema, then the copy
    constraint), or None."""
    from folio_llm.evaluation.constrained import compose, copy_processor_factory, schema_processor_factory
    from folio_llm.evaluation.scoring import target_schema

    schema = params.eval.constrained if constrained is None else constrained
    copy = params.eval.copy_constraint if copy is None else copy
    return compose(schema_processor_factory(tokenizer, target_schema(params.denormalize.fields)) if schema else None,
                   copy_processor_factory(tokenizer, params.eval.copy_fields) if copy else None)


@main.command("evaluate-stage")
@click.option("--base", "base_dir", default="models/base", show_default=True, type=click.Path(file_okay=False))
@click.option("--adapter", "adapter_dir", default="models/adapter", show_default=True, type=click.Path(file_okay=False))
@click.option("--data", "data_path", default="data/datasets/openai/test.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("--out", default="metrics/eval.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--predictions-dir", default="data/predictions", show_default=True, type=click.Path(file_okay=False))
@click.option("--fields-table", default="metrics/eval_fields.csv", show_default=True, type=click.Path(dir_okay=False))
@click.option("--styles-table", default="metrics/eval_styles.csv", show_default=True, type=click.Path(dir_okay=False),
              help="Told-field macro per description style (dvc plots).")
@SCHEMAS_OPTION
@PARAMS_OPTION
@friendly_errors
def evaluate_stage(base_dir, adapter_dir, data_path, out, predictions_dir, fields_table, styles_table, schemas,
                   params_path):
    """Stage `evaluate`: the base model (zero-shot) and the tuned model on the same test
    prompts; metrics/eval.json holds both, under `base` and `tuned`."""
    from folio_llm.evaluation.run import (folio_checks, load_test_rows, load_train_answers, write_field_table,
                                          write_metrics, write_style_table)

    params = load_params(params_path)
    settings = params.eval
    checks = folio_checks(schemas, params.source.reference_data)
    rows, meta = load_test_rows(data_path, settings.limit)
    train_answers = load_train_answers(data_path)
    results = {}
    for label, adapter in (("base", None), ("tuned", adapter_dir)):
        limit = settings.max_new_tokens
        if label == "base" and settings.base_max_new_tokens:
            limit = min(limit, settings.base_max_new_tokens)
        results[label] = _evaluate_one(params, checks, base_dir, adapter, rows, meta, label=label,
                                       predictions=Path(predictions_dir) / f"{label}.jsonl", max_new_tokens=limit,
                                       train_answers=train_answers)
    write_metrics(out, results)
    write_field_table(fields_table, results)
    write_style_table(styles_table, results)


@main.command("fetch-folio")
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
    from folio_llm.folio.snapshot import fetch_snapshot, warnings

    params = load_params(params_path)
    manifest = fetch_snapshot(
        out, sample_size=params.source.sample_size if sample_size is None else sample_size,
        seed=params.seed if seed is None else seed, query=params.source.query if query is None else query,
        strategy=strategy, page_size=page_size, retry=RetryPolicy(attempts, backoff, timeout))
    click.echo(f"{manifest['instances']} instances of {manifest['matching']} matching ({manifest['strategy']}), "
               f"{len(manifest['reference_data'])} kinds of reference data, "
               f"{'mapping rules' if manifest['mapping_rules'] else 'no mapping rules'} -> {out} "
               f"({manifest['requests']} requests)")
    for note in warnings(manifest):
        click.echo(f"warning: {note}", err=True)
    click.echo(f"next: dvc add {out}")


@main.command("export")
@click.option("--base", "base_dir", default="models/base", show_default=True, type=click.Path(file_okay=False))
@click.option("--adapter", "adapter_dir", default="models/adapter", show_default=True, type=click.Path(file_okay=False))
@click.option("--data", "data_path", default="data/datasets/openai/test.jsonl", show_default=True,
              type=click.Path(dir_okay=False), help="Test prompts for the parity check (OpenAI chat layout).")
@click.option("--merged", "merged_dir", default="models/merged", show_default=True, type=click.Path(file_okay=False))
@click.option("--gguf-dir", default="models/gguf", show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", default="metrics/export.json", show_default=True, type=click.Path(dir_okay=False))
@PARAMS_OPTION
@friendly_errors
def export(base_dir, adapter_dir, data_path, merged_dir, gguf_dir, metrics, params_path):
    """Stage `export`: the adapter merged into the base (Hugging Face folder), GGUF files for
    llama.cpp, Ollama and GPT4All with an Ollama Modelfile (params.export), and their answers
    compared with the merged model's on test prompts."""
    from folio_llm.export import export as run

    params = load_params(params_path)
    for path in (Path(base_dir) / "config.json", Path(adapter_dir) / "adapter_config.json"):
        if not path.is_file():
            raise ValueError(f"not found: {path} (run the earlier stages first: dvc repro)")
    result = run(base_dir, adapter_dir, merged_dir, gguf_dir, metrics, data_path, params)
    click.echo(f"merged -> {result['merged']['dir']}")
    for kind, entry in result["gguf"].items():
        click.echo(f"{kind} -> {entry['file']} ({entry['bytes'] / 2**20:.0f} MiB, {entry['seconds']} s)")
    for kind, entry in result.get("gpt4all", {}).items():
        if entry["file"]:
            same = entry["token_identity"]
            click.echo(f"{kind} for GPT4All -> {entry['file']} (pre-tokenizer {entry['pre_tokenizer']} -> "
                       f"{entry['written_pre_tokenizer']}: same token ids on {same['identical']} of {same['texts']} "
                       "test conversations)")
        else:
            click.echo(f"warning: {entry['reason']}", err=True)
    parity = result.get("parity")
    if parity:
        compared = [kind for kind, entry in parity.items() if isinstance(entry, dict) and "exact_match" in entry]
        click.echo(f"parity on {parity['rows']} prompts: transformers macro {parity['transformers']['macro']:.3f}; "
                   + "; ".join(f"{kind} macro {parity[kind]['macro']:.3f} ({parity[kind]['macro_diff']:+.3f}), "
                               f"{parity[kind]['exact_match']:.0%} identical"
                               + (f" in {parity[kind]['engine']}" if "engine" in parity[kind] else "")
                               for kind in compared))
        if isinstance(parity.get("gpt4all"), str):
            click.echo(f"note: GPT4All {parity['gpt4all']}")


@main.command("predict")
@click.argument("descriptions", nargs=-1)
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="A .jsonl file (key 'description' or 'prompt', or OpenAI chat rows) or a .csv file "
                   "(column 'description' or 'prompt'); answers come out as JSON Lines.")
@click.option("--model", "model_path", default=None, type=click.Path(),
              help="A Hugging Face folder or a .gguf file [default: what `dvc repro` made: models/merged, "
                   "else models/base + models/adapter; for llama.cpp models/gguf/<export.name>-<export.types[0]>.gguf].")
@click.option("--backend", type=click.Choice(["transformers", "llama.cpp"]), default=None,
              help="[default: llama.cpp for a .gguf file, else transformers]")
@click.option("--constrained/--no-constrained", default=None,
              help="Keep answers to the JSON shape of the targets [default: params.eval.constrained].")
@click.option("--copy/--no-copy", default=None,
              help="Hold told fields (params.eval.copy_fields) to verbatim spans of the description "
                   "[default: params.eval.copy_constraint].")
@click.option("--folio-ready", is_flag=True,
              help="Labels back to the tenant's reference UUIDs, source FOLIO, checked against FOLIO's Instance schema.")
@click.option("--reference-data", default=None, type=click.Path(file_okay=False),
              help="The tenant's reference data for --folio-ready [default: params.source.reference_data].")
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
def predict(descriptions, input_path, model_path, backend, constrained, copy, folio_ready, reference_data, schemas,
            out, rejects, post, yes, params_path):
    """Write a FOLIO Instance record (JSON) for each description:

    \b
        folio-llm predict "For Vacancies in certain judgeships. Published in 1935 by ..."

    The prompt is the one the model was trained on (params.dataset.system_prompts[0] and the
    model's chat template); decoding is greedy. Lines that cannot be used are reported on
    stderr with their number, and the rest go on."""
    import contextlib

    from folio_llm.export import gguf_path
    from folio_llm.jsonl import JsonlWriter, dumps
    from folio_llm.predict import BadInput, FolioMapper, Generator, default_model, pick_backend, read_requests, to_record

    if not descriptions and not input_path:
        raise click.UsageError("give a description or --input FILE")
    if post and not folio_ready:
        raise click.UsageError("--post needs --folio-ready (FOLIO takes reference UUIDs, not labels)")
    params = load_params(params_path)
    settings = params.eval
    folio = FolioMapper(reference_data or params.source.reference_data, schemas) if folio_ready else None
    if model_path:
        model, adapter = Path(model_path), None
    else:
        model, adapter = default_model(backend, gguf_path("models/gguf", params.export.name, params.export.types[0]))
    backend = pick_backend(model, backend)
    schema = None
    if settings.constrained if constrained is None else constrained:
        from folio_llm.evaluation.scoring import target_schema

        schema = target_schema(params.denormalize.fields)
    copy = settings.copy_constraint if copy is None else copy

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
            generator = Generator.load(model, adapter, backend, dtype=settings.dtype, batch_size=settings.batch_size,
                                       max_new_tokens=settings.max_new_tokens, schema=schema,
                                       copy_fields=settings.copy_fields if copy else None)
            try:
                answers = generator.answer([r.messages for r in requests])
            finally:
                generator.close()
            for request, answer in zip(requests, answers):
                outcome = to_record(answer, folio)
                for warning in outcome.warnings:
                    click.echo(f"warning: {request.where}: {warning}", err=True)
                if outcome.record is None:
                    reject(request.where, outcome.error, description=request.description, output=answer)
                    continue
                written += 1
                if records:
                    records.write(outcome.record)
                else:
                    click.echo(dumps(outcome.record))
                if post:
                    _post(request.where, outcome.record, tenant)
    if input_path or rejected:
        click.echo(f"{read} read, {written} written, {rejected} rejected", err=True)
    if not written:
        raise ValueError("no record written (reasons above)")


def _post(where: str, record: dict, tenant) -> None:
    """Create ``record`` in the tenant (``tenant`` a FolioApi session), or show the request."""
    from folio_llm.folio.api import post_instance

    result = post_instance(record, send=tenant is not None, client=tenant)
    if result.sent:
        click.echo(f"{where}: created instance {result.id}" + (f" (hrid {result.hrid})" if result.hrid else ""), err=True)
    else:
        click.echo(f"{where}: dry run (add --yes to send):\n{result.request_text()}", err=True)


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

"""Stage `export`: merged model, GGUF files for llama.cpp, Ollama and GPT4All, and their parity."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors
from folio_llm.sections import load_sections
from folio_llm.sections.dataset import DatasetParams
from folio_llm.sections.eval import EvalParams
from folio_llm.sections.export import ExportParams


@click.command("export")
@click.option("--base", "base_dir", default=paths.BASE, show_default=True, type=click.Path(file_okay=False))
@click.option("--adapter", "adapter_dir", default=paths.ADAPTER, show_default=True, type=click.Path(file_okay=False))
@click.option("--data", "data_path", default=paths.TEST_SPLIT, show_default=True,
              type=click.Path(dir_okay=False), help="Test prompts for the parity check (OpenAI chat layout).")
@click.option("--merged", "merged_dir", default=paths.MERGED, show_default=True, type=click.Path(file_okay=False))
@click.option("--gguf-dir", default=paths.GGUF_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", default=paths.EXPORT_METRICS, show_default=True, type=click.Path(dir_okay=False))
@PARAMS_OPTION
@friendly_errors
def export(base_dir, adapter_dir, data_path, merged_dir, gguf_dir, metrics, params_path):
    """Stage `export`: the adapter merged into the base (Hugging Face folder), GGUF files for
    llama.cpp, Ollama and GPT4All with an Ollama Modelfile (params.export), and their answers
    compared with the merged model's on test prompts."""
    from folio_llm.export import export as run

    params = load_sections(params_path, export=ExportParams, eval=EvalParams, dataset=DatasetParams)
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
        for kind in compared:
            logits = parity[kind].get("logits")
            if logits:
                click.echo(f"{kind} logits on the same tokens: max difference {logits['max_abs_diff']:.3g}; "
                           f"same next token at {logits['decisive_agree']} of {logits['decisive']} decisive positions "
                           f"({logits['positions'] - logits['decisive']} near-ties reported, not required); "
                           f"prompt tokens identical {logits['prompt_tokens_identical']} of {parity['rows']}")
        if isinstance(parity.get("gpt4all"), str):
            click.echo(f"note: GPT4All {parity['gpt4all']}")

"""Stage `train`: LoRA fine-tuning, and `inspect-batch` to see what the loss sees."""

from __future__ import annotations

from pathlib import Path

import click

from folio_llm import paths
from folio_llm.commands.options import PARAMS_OPTION, friendly_errors
from folio_llm.sections import load_sections
from folio_llm.sections.train import TrainParams


@click.command("train")
@PARAMS_OPTION
@click.option("--data", "data_dir", default=paths.CHAT_SPLITS, show_default=True, type=click.Path(file_okay=False),
              help="Folder with train.jsonl and valid.jsonl (chat layout).")
@click.option("--base", "base_dir", default=paths.BASE, show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default=paths.ADAPTER, show_default=True, type=click.Path(file_okay=False))
@click.option("--checkpoints", default=paths.CHECKPOINTS, show_default=True, type=click.Path(file_okay=False))
@click.option("--metrics", default=paths.TRAIN_METRICS, show_default=True, type=click.Path(dir_okay=False))
@click.option("--live", default=paths.TRAIN_LIVE, show_default=True, type=click.Path(file_okay=False),
              help="dvclive folder for the loss / learning-rate / tokens-per-second curves.")
@friendly_errors
def train(params_path, data_dir, base_dir, out, checkpoints, metrics, live):
    """Stage `train`: LoRA fine-tuning (params.train). Re-running after a kill resumes from
    the last checkpoint."""
    params = load_sections(params_path, seed=int, train=TrainParams)
    for path in (Path(data_dir) / "train.jsonl", Path(base_dir) / "config.json"):
        if not path.is_file():
            raise ValueError(f"not found: {path} (run the earlier stages first: dvc repro)")
    from folio_llm.training.loop import RunPaths, train as run

    seed = params.train.seed or params.seed
    result = run(params.train, seed, RunPaths(data_dir, base_dir, out, checkpoints, metrics, live))
    click.echo(f"{result['steps']} steps, valid loss {result['valid_loss']}, {result['tokens_per_s']} tokens/s")


@click.command("inspect-batch")
@click.option("--data", "data_file", default=paths.CHAT_TRAIN, show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--base", "base_dir", default=paths.BASE, show_default=True, type=click.Path(file_okay=False))
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

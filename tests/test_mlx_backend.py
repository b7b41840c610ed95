"""The mlx backend on a tiny llama with the real SmolLM2 tokenizer and real chat rows.

Proves the loss falls, the peft-layout adapter is the function mlx trained (same logits, same
validation loss through peft + transformers), and an interrupted run resumes to the same weights.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from folio_llm.dataset import build_examples, write_layouts
from folio_llm.params import TrainParams, parse_params

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from folio_llm.models import prompt_text  # noqa: E402
from folio_llm.training import mlx_backend  # noqa: E402
from folio_llm.training.data import collate, encode_rows  # noqa: E402
from folio_llm.training.loop import RunPaths, train  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_base):
    return tiny_base


@pytest.fixture(scope="module")
def chat_dir(sample_records, tmp_path_factory):
    """The chat layout rendered by the project's own renderer from the real FOLIO sample Instances."""
    tmp = tmp_path_factory.mktemp("chat")
    write_layouts(build_examples(sample_records, parse_params({}).dataset, 42), tmp / "layouts")
    small = tmp / "small"  # the shortest rows keep the CPU run short
    small.mkdir()
    for split, n in (("train", 8), ("valid", 2)):
        lines = sorted((tmp / "layouts" / "chat" / f"{split}.jsonl").read_text().splitlines(), key=len)[:n]
        (small / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return small


def train_params() -> TrainParams:
    """A high learning rate so a few steps show; two micro-batches of two rows per step (2 steps
    an epoch, so the run crosses epochs and resumes mid-epoch); dropout on, so resuming must
    restore the random state too."""
    params = parse_params({"train": dict(
        backend="mlx", learning_rate=3e-2, lr_schedule="cosine", warmup_ratio=0.0, max_steps=5, batch_size=2,
        grad_accum=2, max_length=1024, log_every=1, save_every=3,
    )}).train
    params.lora.rank, params.lora.alpha, params.lora.dropout = 8, 16.0, 0.1
    return params


@pytest.fixture(scope="module")
def trained(tiny, chat_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    params = train_params()
    metrics = train(params, 42, RunPaths(chat_dir, tiny, tmp / "adapter", tmp / "ckpt",
                                                          metrics_path=tmp / "metrics.json", live_dir=tmp / "live"))
    return params, metrics, tmp


def test_loss_falls_and_outputs_match_the_torch_layout(trained, tiny):
    params, metrics, tmp = trained
    assert json.loads((tmp / "metrics.json").read_text()) == metrics
    assert set(metrics) == {
        "steps", "epochs", "train_rows", "train_rows_too_long", "valid_rows", "train_loss", "valid_loss",
        "tokens", "tokens_per_s", "seconds", "resumed_from_step", "precision", "device", "processes", "compiled",
    }
    assert metrics["compiled"] is False
    assert metrics["steps"] == 5 and metrics["epochs"] == 2.5
    assert metrics["train_rows"] == 8 and metrics["valid_rows"] == 2 and metrics["resumed_from_step"] == 0
    assert metrics["device"] == "mlx-cpu" and metrics["precision"] == "no"
    losses = [float(line.split("\t")[-1]) for line in
              (tmp / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]]
    assert len(losses) == 5
    assert losses[-1] < losses[0] - 1.5, losses
    assert metrics["train_loss"] == pytest.approx(losses[-1])  # the last logging window, as torch reports it
    assert not (tmp / "ckpt").exists()
    adapter = tmp / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 8 and config["lora_alpha"] == 16.0
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert (adapter / "tokenizer.json").is_file()
    from safetensors.numpy import load_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 7 * 2
    assert tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"].shape == (8, 128)
    assert tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (64, 8)


def _peft_model(tiny, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny, dtype="float32"), adapter)
    return model.eval()


def test_peft_reads_the_same_function_as_mlx(tiny, chat_dir, tmp_path):
    """A random, non-zero adapter with an mlx scale other than alpha/r (mlx-lm's old default
    20): the peft export folds it, and peft's logits equal mlx's."""
    import torch

    from folio_llm.models import load_tokenizer

    params = train_params()
    mx.random.seed(1)
    model = mlx_backend.load_base(tiny)
    targets = mlx_backend.apply_lora(model, params)
    for _, module in mlx_backend.lora_modules(model):
        module.lora_b = mx.random.normal(module.lora_b.shape) * 0.05
        module.scale = 20.0
    model.eval()
    mlx_backend.save_peft(model, tmp_path, params, targets, Path(tiny))

    tok = load_tokenizer(str(tiny))
    row = json.loads((chat_dir / "valid.jsonl").read_text().splitlines()[0])
    ids = tok(prompt_text(tok, row["messages"]), add_special_tokens=False)["input_ids"]
    ours = np.array(model(mx.array([ids])).astype(mx.float32))
    base = np.array(mlx_backend.load_base(tiny)(mx.array([ids])).astype(mx.float32))
    with torch.no_grad():
        theirs = _peft_model(tiny, tmp_path)(input_ids=torch.tensor([ids])).logits.numpy()
    assert np.abs(ours - base).max() > 0.05  # the adapter does change the function
    np.testing.assert_allclose(theirs, ours, rtol=1e-3, atol=1e-3 * np.abs(ours).max())


def test_trained_adapter_gives_peft_the_mlx_validation_loss(trained, tiny, chat_dir):
    """The trained adapter, read by peft, scores the validation rows as mlx did."""
    import torch

    from folio_llm.jsonl import load_jsonl
    from folio_llm.models import load_tokenizer

    params, metrics, tmp = trained
    tok = load_tokenizer(str(tiny))
    split = encode_rows(tok, load_jsonl(chat_dir / "valid.jsonl"), params.max_length)
    model = _peft_model(tiny, tmp / "adapter")
    total, count = 0.0, 0
    with torch.no_grad():
        for row in split.rows:
            loss = model(**collate([row], tok.pad_token_id)).loss.item()
            total += loss * row.answer_tokens  # labels[0] is the prompt's, so the shift drops none
            count += row.answer_tokens
    assert total / count == pytest.approx(metrics["valid_loss"], rel=1e-5)


def test_interrupted_run_resumes_to_the_same_weights(trained, tiny, chat_dir, tmp_path):
    """A run that dies after its step-3 checkpoint (here: its output path is a file) is
    resumed by the next run, which ends with the weights of the uninterrupted run."""
    from safetensors.numpy import load_file

    params, whole, run = trained
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    with pytest.raises(FileExistsError):
        train(params, 42, RunPaths(chat_dir, tiny, blocked, tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "last").read_text() == "step-000003"
    resumed = train(params, 42, RunPaths(chat_dir, tiny, tmp_path / "resumed", tmp_path / "ckpt"))
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 5 and resumed["tokens"] == whole["tokens"]
    assert resumed["valid_loss"] == pytest.approx(whole["valid_loss"], rel=1e-5)
    a = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6)


def test_learning_rate_schedule_matches_transformers():
    import torch
    from transformers import get_scheduler

    for schedule in ("cosine", "linear", "constant"):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        name = schedule if schedule != "constant" else "constant_with_warmup"
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=3, num_training_steps=20)
        for step in range(20):
            assert mlx_backend.lr_factor(step, 20, 3, schedule) == pytest.approx(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()


def test_missing_mlx_is_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # what `import mlx_lm` meets where it is not installed
    with pytest.raises(ValueError, match=r"^train.backend 'mlx' needs mlx and mlx-lm: pip install 'folio-llm\[mlx\]'$"):
        train(TrainParams(backend="mlx"), 0, RunPaths("d", "b", "o", "c"))


def test_top_layers_only_are_adapted_and_peft_reads_them_there(tiny, tmp_path):
    """train.lora.layers on the mlx backend: LoRA on the top layer alone, and the peft config it
    writes names that layer, as the torch backend's does."""
    params = train_params()
    params.lora.layers = 1
    model = mlx_backend.load_base(tiny)
    targets = mlx_backend.apply_lora(model, params)
    assert {name.split("layers.")[1].split(".")[0] for name, _ in mlx_backend.lora_modules(model)} == {"1"}
    mlx_backend.save_peft(model, tmp_path, params, targets, Path(tiny))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["layers_to_transform"] == [1]


def test_structure_weight_gives_mlx_the_torch_loss(tiny, chat_dir):
    """The same weighted loss on both backends: mlx's sum of weighted cross-entropies over its
    answer tokens equals the torch loss's on the same base and rows."""
    import torch
    from transformers import AutoModelForCausalLM

    from folio_llm.jsonl import load_jsonl
    from folio_llm.models import load_tokenizer
    from folio_llm.training.losses import AnswerLoss

    tok = load_tokenizer(str(tiny))
    rows = encode_rows(tok, load_jsonl(chat_dir / "train.jsonl")[:2], 1024, structure_weight=0.1).rows
    model = mlx_backend.load_base(tiny)
    summed, count = mlx_backend.loss_sum(model, *mlx_backend.to_arrays(rows, tok.pad_token_id, weighted=True))
    plain, _ = mlx_backend.loss_sum(model, *mlx_backend.to_arrays(rows, tok.pad_token_id))
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny, dtype="float32").eval()
        theirs, their_count = AnswerLoss(base)(batch["input_ids"], batch["labels"], batch["weights"])
    assert int(count.item()) == int(their_count) == sum(r.answer_tokens for r in rows)
    assert summed.item() == pytest.approx(theirs.item(), rel=1e-3)
    assert summed.item() < plain.item()

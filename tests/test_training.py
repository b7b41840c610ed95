"""LoRA training with the torch backend: a tiny llama (real tokenizer) on real dataset rows."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from click.testing import CliRunner

from folio_llm.cli import main
from folio_llm.jsonl import load_jsonl
from folio_llm.models import ModelError, load_tokenizer, prompt_text, resolve
from folio_llm.params import parse_params
from folio_llm.training.data import IGNORE, collate, decided_characters, encode_chat
from folio_llm.training.loop import RunPaths, train


def rows(dataset, split="train"):
    return load_jsonl(dataset / "chat" / f"{split}.jsonl")


def test_loss_is_on_the_answer_and_end_of_turn_only(tiny_base, real_dataset):
    tokenizer = load_tokenizer(str(tiny_base))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    for row in rows(real_dataset)[:20]:
        messages = row["messages"]
        encoded = encode_chat(tokenizer, messages)
        masked = [t for t, label in zip(encoded.input_ids, encoded.labels) if label == IGNORE]
        answer = [label for label in encoded.labels if label != IGNORE]
        # the masked part is exactly the prompt: system, user and the assistant header
        first_answer = encoded.labels.index(answer[0])
        assert all(label == IGNORE for label in encoded.labels[:first_answer])
        assert all(label != IGNORE for label in encoded.labels[first_answer:])
        assert tokenizer.decode(masked) == prompt_text(tokenizer, messages)
        assert answer == encoded.input_ids[first_answer:]
        assert tokenizer.decode(answer) == messages[2]["content"] + tokenizer.eos_token
        assert encoded.input_ids[-1] == encoded.labels[-1] == tokenizer.eos_token_id


def test_padding_is_never_in_the_loss(tiny_base, real_dataset):
    tokenizer = load_tokenizer(str(tiny_base))
    encoded = [encode_chat(tokenizer, r["messages"]) for r in rows(real_dataset)[:4]]
    batch = collate(encoded, tokenizer.pad_token_id)
    for i, row in enumerate(encoded):
        n = len(row)
        assert batch["labels"][i, n:].eq(IGNORE).all()
        assert batch["input_ids"][i, n:].eq(tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].sum() == n


def answer_loss(model, tokenizer, messages_list):
    model.eval()
    batch = collate([encode_chat(tokenizer, m) for m in messages_list], tokenizer.pad_token_id)
    with torch.no_grad():
        return model(**batch).loss.item()


def test_loss_falls_and_adapter_is_in_peft_layout(tiny_base, real_dataset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    params = parse_params({"train": {"max_steps": 15, "batch_size": 4, "learning_rate": 2e-2, "log_every": 5,
                                     "save_every": 100, "lora": {"rank": 8}}}).train
    metrics = train(params, 42, RunPaths(real_dataset / "chat", tiny_base, tmp_path / "adapter", tmp_path / "ck",
                                         tmp_path / "metrics.json", tmp_path / "live"))
    assert metrics["steps"] == 15 and metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (tmp_path / "adapter" / name).is_file()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8
    # byte-identical run to run: peft writes this list from a set, in hash-seed order
    assert config["target_modules"] == sorted(config["target_modules"]) and config["target_modules"]
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 15
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    assert not (tmp_path / "ck").exists()  # a finished run leaves nothing to resume

    tokenizer = load_tokenizer(str(tiny_base))
    sample = [r["messages"] for r in rows(real_dataset)[:16]]
    before = answer_loss(AutoModelForCausalLM.from_pretrained(tiny_base), tokenizer, sample)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tmp_path / "adapter")
    after = answer_loss(tuned, tokenizer, sample)
    # a random two-layer model over a 49k vocabulary starts near ln(49152) = 10.8 and falls slowly
    assert after < before - 0.1, (before, after)


def write_params(path, **train):
    path.write_text(yaml.safe_dump({"train": train}))
    return path


def test_killed_run_resumes_from_last_checkpoint(tiny_base, real_dataset, tmp_path):
    params = write_params(tmp_path / "params.yaml", max_steps=60, batch_size=2, save_every=3, log_every=3,
                          precision="fp32", learning_rate=1e-3)
    command = [sys.executable, "-m", "folio_llm.cli", "train", "--params", str(params),
               "--data", str(real_dataset / "chat"), "--base", str(tiny_base), "--out", str(tmp_path / "adapter"),
               "--checkpoints", str(tmp_path / "ck"), "--metrics", str(tmp_path / "m.json"), "--live", str(tmp_path / "live")]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    pointer = tmp_path / "ck" / "last"
    deadline = time.time() + 240
    while not pointer.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert pointer.exists(), "no checkpoint was written before the run ended"
    step = int(pointer.read_text().strip().split("-")[1])
    assert 0 < step < 60
    shutil.copytree(tmp_path / "ck", tmp_path / "ck-copy")

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming from checkpoint at step {step}" in again.stdout + again.stderr
    # the first line plans the rest: machine, arithmetic, steps left, time at this machine's rate
    planning = next(line for line in again.stdout.splitlines() if line.startswith("train: "))
    assert "(fp32, eager layers)" in planning and f"; {60 - step} steps, about " in planning
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["resumed_from_step"] == step and metrics["steps"] == 60

    # the same checkpoint under other settings is not resumed: the run starts over
    shutil.copytree(tmp_path / "ck-copy", tmp_path / "ck")
    write_params(params, max_steps=step + 2, batch_size=2, save_every=3, log_every=3, precision="fp32",
                 learning_rate=2e-3)
    other = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert other.returncode == 0, other.stdout + other.stderr
    assert "from other settings or data: starting over" in other.stdout + other.stderr
    assert json.loads((tmp_path / "m.json").read_text())["resumed_from_step"] == 0


def test_two_cpu_processes_under_accelerate(tiny_base, real_dataset, tmp_path):
    params = write_params(tmp_path / "params.yaml", max_steps=3, batch_size=2, precision="fp32", log_every=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "folio_llm.cli", "train", "--params", str(params), "--data", str(real_dataset / "chat"),
         "--base", str(tiny_base), "--out", str(tmp_path / "adapter"), "--checkpoints", str(tmp_path / "ck"),
         "--metrics", str(tmp_path / "m.json"), "--live", str(tmp_path / "live")],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 3
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_train_refuses_bad_params_and_missing_inputs(tiny_base, tmp_path):
    params = write_params(tmp_path / "params.yaml", batch_size=0)
    result = CliRunner().invoke(main, ["train", "--params", str(params), "--base", str(tiny_base)])
    assert result.exit_code == 1 and "train.batch_size" in result.output and "Traceback" not in result.output
    params = write_params(tmp_path / "params.yaml", batch_size=2)
    result = CliRunner().invoke(main, ["train", "--params", str(params), "--data", str(tmp_path / "none"),
                                       "--base", str(tiny_base)])
    assert result.exit_code == 1 and "train.jsonl" in result.output


def test_bad_model_values_name_the_value(tmp_path):
    for value in (str(tmp_path / "missing.gguf"), str(tmp_path), "not a model"):
        with pytest.raises(ModelError) as err:
            resolve(value)
        assert value in str(err.value)
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.slow
def test_default_gguf_base_materializes_with_chat_template(smollm2_base):
    from transformers import AutoModelForCausalLM

    folder = smollm2_base
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    tokenizer = load_tokenizer(str(folder))
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.pad_token != tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "llama"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6


def test_lora_on_the_top_layers_only_trains_and_loads_there(tiny_base, real_dataset, tmp_path):
    """train.lora.layers: the adapter holds LoRA weights of the top layers alone, peft's config
    says so, and peft puts them back on those layers (the lower ones keep the base's function)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    settings = {"max_steps": 2, "batch_size": 2, "precision": "fp32", "compile": "off", "save_every": 100}
    params = parse_params({"train": {**settings, "lora": {"layers": 1}}}).train
    train(params, 42, RunPaths(real_dataset / "chat", tiny_base, tmp_path / "adapter", tmp_path / "ck"))
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert weights and all(".layers.1." in key for key in weights)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tmp_path / "adapter")
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in tuned.named_modules() if name.endswith("lora_A")}
    assert adapted == {"1"}

    too_many = parse_params({"train": {**settings, "lora": {"layers": 3}}}).train
    with pytest.raises(ValueError, match=r"^train.lora.layers 3: the model has 2 decoder layers$"):
        train(too_many, 42, RunPaths(real_dataset / "chat", tiny_base, tmp_path / "other", tmp_path / "ck2"))


def test_decided_characters_leave_out_what_the_schema_forces():
    answer = '{"title":"A \\"b\\", c","contributors":[{"name":"X","primary":true}],"languages":["eng","fre"]}'
    marks = "".join(c if keep else "_" for c, keep in zip(answer, decided_characters(answer)))
    assert marks == '{_t_______A \\"b\\", c",_c______________{_n______X",_p________true}],_l____________eng",_fre"]}'
    assert all(decided_characters("not json at all"))


def test_structure_weight_falls_on_forced_tokens_only(tiny_base, real_dataset):
    """On real rows: the tokens weighed down hold no character of any value, every value is
    spelt by the tokens that keep weight 1, and the end of turn keeps its weight."""
    tokenizer = load_tokenizer(str(tiny_base))
    forced_tokens = answer_tokens = 0
    for row in rows(real_dataset)[:30]:
        answer = row["messages"][-1]["content"]
        encoded = encode_chat(tokenizer, row["messages"], structure_weight=0.25)
        answer_part = [(t, w) for t, label, w in zip(encoded.input_ids, encoded.labels, encoded.weights)
                       if label != IGNORE]
        assert all(w == 0.0 for label, w in zip(encoded.labels, encoded.weights) if label == IGNORE)
        forced = "".join(tokenizer.decode([t]) for t, w in answer_part if w == 0.25)
        decided = "".join(tokenizer.decode([t]) if w == 1.0 else "\0" for t, w in answer_part)
        record = json.loads(answer)
        keys = {k for value in _walk(record) if isinstance(value, dict) for k in value}
        assert set(forced) <= set("".join(keys) + '"{[:'), forced
        for value in _walk(record):
            if isinstance(value, str):
                assert json.dumps(value, ensure_ascii=False)[1:-1] in decided, value
        assert answer_part[-1] == (tokenizer.eos_token_id, 1.0)
        forced_tokens += sum(w < 1 for _, w in answer_part)
        answer_tokens += len(answer_part)
    assert 0 < forced_tokens < answer_tokens / 2
    assert encode_chat(tokenizer, rows(real_dataset)[0]["messages"]).weights is None  # the default: all alike


def _walk(value):
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from _walk(child)


def test_weighted_loss_is_the_weighted_sum_over_answer_tokens(tiny_base, real_dataset):
    """mean_answer_loss with weights: each answer token's cross-entropy times its weight, over the
    count of answer tokens (a token weighed down gives its gradient to none of the others)."""
    from transformers import AutoModelForCausalLM

    from folio_llm.training.losses import AnswerLoss, mean_answer_loss

    tokenizer = load_tokenizer(str(tiny_base))
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    messages = [r["messages"] for r in rows(real_dataset)[:3]]
    plain = collate([encode_chat(tokenizer, m) for m in messages], tokenizer.pad_token_id)
    weighted = collate([encode_chat(tokenizer, m, structure_weight=0.0) for m in messages], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=plain["input_ids"]).logits[:, :-1].float()
        targets = plain["labels"][:, 1:]
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
        answer = targets != IGNORE
        expected = (per_token * weighted["weights"][:, 1:])[answer].sum() / answer.sum()
        loss_model = AnswerLoss(model)
        assert mean_answer_loss(loss_model, weighted).item() == pytest.approx(expected.item(), rel=1e-5)
        assert mean_answer_loss(loss_model, plain).item() == pytest.approx(per_token[answer].mean().item(), rel=1e-5)
        assert mean_answer_loss(loss_model, weighted).item() < mean_answer_loss(loss_model, plain).item()


def test_training_with_structure_weight_runs_and_validates_all_alike(tiny_base, real_dataset, tmp_path):
    """A run with forced tokens weighed down trains, and its validation loss is the plain mean
    over every answer token, as peft + transformers compute it for the adapter it wrote."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    settings = {"max_steps": 2, "batch_size": 2, "precision": "fp32", "compile": "off", "save_every": 100,
                "learning_rate": 2e-2}
    params = parse_params({"train": {**settings, "structure_weight": 0.1}}).train
    metrics = train(params, 42, RunPaths(real_dataset / "chat", tiny_base, tmp_path / "adapter", tmp_path / "ck"))
    assert metrics["steps"] == 2
    tokenizer = load_tokenizer(str(tiny_base))
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tmp_path / "adapter").eval()
    total = count = 0
    with torch.no_grad():
        for row in rows(real_dataset, "valid"):
            encoded = encode_chat(tokenizer, row["messages"])
            if len(encoded) > params.max_length:  # left out of the validation loss too
                continue
            total += tuned(**collate([encoded], tokenizer.pad_token_id)).loss.item() * encoded.answer_tokens
            count += encoded.answer_tokens
    assert metrics["valid_loss"] == pytest.approx(total / count, rel=1e-4)
    with pytest.raises(ValueError, match=r"train.structure_weight: must be in \[0, 1\]"):
        parse_params({"train": {**settings, "structure_weight": 1.5}})

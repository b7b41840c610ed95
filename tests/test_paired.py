"""Two runs paired per row (benchmarks/paired.py) on the real test
split: answers scored by the real scorer against the real references."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, load_benchmark

from folio_llm.evaluation.scoring import score_record
from folio_llm.jsonl import load_jsonl, write_jsonl

pairing = load_benchmark("paired")
PairingError, paired, row_score, with_fields_told = (pairing.PairingError, pairing.paired, pairing.row_score,
                                                     pairing.with_fields_told)


def prediction_rows(dataset: Path, answer) -> list[dict]:
    """The test split's rows as the evaluate stage writes them, each answered by ``answer(reference)``."""
    rows = []
    for row, meta in zip(load_jsonl(dataset / "openai" / "test.jsonl"), load_jsonl(dataset / "meta" / "test.jsonl")):
        reference = row["messages"][-1]["content"]
        rows.append({"id": meta["id"], "style": meta["style"], "told": meta["transcribed"],
                     "inferred": meta["inferred"], **score_record(answer(json.loads(reference)), reference)})
    return rows


def without_title(record: dict) -> str:
    return json.dumps({key: value for key, value in record.items() if key != "title"})


@pytest.fixture(scope="module")
def runs(real_dataset):
    whole = prediction_rows(real_dataset, json.dumps)
    untitled = prediction_rows(real_dataset, without_title)
    return whole, untitled


def test_a_run_paired_with_itself_moves_nothing(runs):
    whole, _ = runs
    result = paired(whole, whole)
    assert len(result.differences) == len(whole) and result.mean == 0 and not result.moved
    assert all(row_score(row) == 1.0 for row in whole)  # the reference itself scores 1 on every told field


def test_losing_a_told_field_shows_on_every_row_that_tells_it(runs):
    whole, untitled = runs
    result = paired(whole, untitled)
    titled = [row for row in whole if "title" in row["told"]]
    assert result.worse == len(titled) > 0 and result.better == 0
    low, high = result.interval()
    assert low <= result.mean <= high < 0
    first = next(row for row in whole if "title" in row["told"])
    assert result.moved[0][0] == first["id"] and result.moved[0][3] < result.moved[0][2] == 1.0
    # the inferred fields do not hold the title: nothing moves there
    assert paired(whole, untitled, "inferred").moved == []


def test_rows_without_told_fields_take_them_from_the_meta_file(real_dataset, runs):
    whole, untitled = runs
    bare = [{key: value for key, value in row.items() if key not in ("told", "inferred")} for row in untitled]
    with pytest.raises(PairingError, match=bare[0]["id"]):
        paired(whole, bare)
    meta = load_jsonl(real_dataset / "meta" / "test.jsonl")
    assert paired(whole, with_fields_told(bare, meta)).differences == paired(whole, untitled).differences
    with pytest.raises(PairingError, match="no field scores"):
        paired(whole, [{"id": row["id"], "told": row["told"]} for row in untitled])  # not scored: a dataset file


def test_the_benchmark_compares_files_and_folders(runs, tmp_path):
    whole, untitled = runs
    for folder, rows in (("before", whole), ("after", untitled)):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "labels.jsonl", rows)
    script = [sys.executable, str(REPO / "benchmarks" / "paired.py")]
    done = subprocess.run(script + [str(tmp_path / "before"), str(tmp_path / "after"), "--show", "1"],
                          capture_output=True, text=True, check=True)
    worse = sum("title" in row["told"] for row in whole)
    assert f"0 better / {worse} worse of {len(whole)}" in done.stdout and done.stdout.count("\n    ") == 1
    assert done.stdout.splitlines()[-1].startswith("all: told per row -")
    refused = subprocess.run(script + [str(tmp_path / "before"), str(tmp_path / "after" / "labels.jsonl")],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "both be files or both be folders" in refused.stderr

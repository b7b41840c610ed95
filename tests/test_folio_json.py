"""The folio-json source: Instance JSON files, arrays, API responses and JSON Lines."""
import json

import yaml
from click.testing import CliRunner

from conftest import RAW, REFERENCE
from folio_llm.cli import main

SAMPLES = RAW / "folio" / "instances"


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_instances(tmp_path, path, sample_size, seed=42, out="i.jsonl"):
    """The `instances` stage on folio-json input, with its own params.yaml."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": seed, "source": {"kind": "folio-json", "path": str(path),
                                                               "sample_size": sample_size}}))
    return run(["instances", "--params", params, "--out", tmp_path / out,
                "--rejects", tmp_path / "r.jsonl", "--report", tmp_path / "rep.json"])


def test_real_sample_instances_all_read(tmp_path):
    result = run_instances(tmp_path, SAMPLES, 0)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "132 read, 132 written, 0 rejected"
    assert len(lines(tmp_path / "i.jsonl")) == 132


def test_bad_lines_go_to_rejects_and_counts_reconcile(tmp_path):
    good = [json.loads(p.read_text()) for p in sorted((SAMPLES / "mod-inventory-storage-sample").glob("*.json"))[:3]]
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join([
        json.dumps(good[0]),
        "{not json",
        json.dumps({"id": "no-title-here", "instanceTypeId": "x"}),
        "[1, 2]",
        json.dumps(good[1]),
        json.dumps(good[2]),
    ]) + "\n")
    result = run_instances(tmp_path, source, 2)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "6 read, 2 written, 3 rejected, 1 not sampled"
    rejects = lines(tmp_path / "r.jsonl")
    assert [r["position"] for r in rejects] == [2, 3, 4]
    assert "invalid JSON" in rejects[0]["reason"]
    assert rejects[1]["identifier"] == "no-title-here" and rejects[1]["reason"] == "no title"
    assert "not a JSON object" in rejects[2]["reason"]
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["read"] == report["written"] + report["rejected"] + report["not_sampled"]


def test_denormalize_rejects_bad_lines(tmp_path):
    source = tmp_path / "instances.jsonl"
    source.write_text(json.dumps({"title": "Kept", "hrid": "1"}) + "\n{oops\n" + json.dumps({"hrid": "2"}) + "\n")
    result = run(["denormalize", source, "--reference-data", REFERENCE, "--out", tmp_path / "d.jsonl",
                  "--rejects", tmp_path / "dr.jsonl", "--params", tmp_path / "none.yaml"])
    assert result.exit_code == 0
    assert result.output.strip() == "3 read, 1 written, 2 rejected"
    assert [r["position"] for r in lines(tmp_path / "dr.jsonl")] == [2, 3]


def test_missing_inputs_are_one_line_errors(tmp_path):
    result = run(["denormalize", tmp_path / "nope.jsonl", "--reference-data", REFERENCE, "--out", tmp_path / "d.jsonl",
                  "--params", tmp_path / "none.yaml"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "nope.jsonl" in result.output
    result = run(["denormalize", tmp_path / "nope.jsonl", "--reference-data", tmp_path / "nodir", "--out", tmp_path / "d.jsonl",
                  "--params", tmp_path / "none.yaml"])
    assert result.exit_code == 1 and "nodir" in result.output
    result = run(["build-dataset", tmp_path / "nope.jsonl", "--out-dir", tmp_path / "ds", "--params", tmp_path / "none.yaml"])
    assert result.exit_code == 1 and "nope.jsonl" in result.output


def test_sample_is_seeded_and_nested(tmp_path):
    def sample(size, seed):
        out = f"i-{size}-{seed}.jsonl"
        assert run_instances(tmp_path, SAMPLES, size, seed, out).exit_code == 0
        return [r["id"] for r in lines(tmp_path / out)]

    small, large = sample(20, 1), sample(60, 1)
    assert len(small) == 20 and len(large) == 60
    assert set(small) <= set(large)
    assert sample(20, 1) == small
    assert sample(20, 2) != small

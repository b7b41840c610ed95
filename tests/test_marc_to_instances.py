"""`folio-llm marc-to-instances` on the real MARC files, whole and damaged."""
import json

from click.testing import CliRunner

from conftest import BIBS, CONFORMANCE, REFERENCE, RULES
from folio_llm.cli import main


def run(tmp_path, *inputs):
    result = CliRunner().invoke(main, [
        "marc-to-instances", *map(str, inputs), "--rules", str(RULES), "--reference-data", str(REFERENCE),
        "--out", str(tmp_path / "out.jsonl"), "--rejects", str(tmp_path / "rejects.jsonl"),
    ])
    assert "Traceback" not in result.output
    return result


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_real_marc_maps_with_reference_uuids(tmp_path, reference):
    result = run(tmp_path, CONFORMANCE / "cornell-bibs.mrc")
    assert result.exit_code == 0
    assert result.output.strip() == "20 read, 20 written, 0 rejected"
    instances = records(tmp_path / "out.jsonl")
    assert all(i["title"] and i["source"] == "MARC" for i in instances)
    assert all(reference.by_id("instance-types", i["instanceTypeId"]) for i in instances)


def test_damaged_file_rejects_only_the_bad_records(tmp_path):
    raw = BIBS.read_bytes().split(b"\x1d")[:6]
    raw = [r + b"\x1d" for r in raw]
    raw[2] = b"xx" + raw[2][2:]                     # bad leader
    damaged = tmp_path / "damaged.mrc"
    damaged.write_bytes(b"".join(raw[:5]) + raw[5][: len(raw[5]) // 2])  # truncated last record
    result = run(tmp_path, damaged)
    assert result.exit_code == 0
    assert result.output.strip() == "6 read, 4 written, 2 rejected"
    rejects = records(tmp_path / "rejects.jsonl")
    assert [r["position"] for r in rejects] == [3, 6]
    assert "bad leader" in rejects[0]["reason"] and "truncated" in rejects[1]["reason"]


def test_unusable_inputs_fail_with_one_line(tmp_path):
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("just some notes, not MARC\n")
    for bad in (empty, text):
        result = run(tmp_path, bad)
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert lines[0] == "1 read, 0 written, 1 rejected"
        assert lines[1].startswith("error: no usable records")
        assert len(records(tmp_path / "rejects.jsonl")) == 1
    result = run(tmp_path, tmp_path / "missing.mrc")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "missing.mrc" in result.output

"""Each stage reads only its own params sections: an edit of one section's module (a setting or
its help text) or of its values in params.yaml re-runs only the stages that read it."""
import json
import re
import shutil

import pytest
import yaml

from conftest import REPO, copy_repo, dvc
from folio_llm.params import Params
from folio_llm.sections import SECTION_NAMES

SECTIONS = [name for name in SECTION_NAMES if name != "seed"]


def test_the_sections_are_the_params_file():
    assert tuple(field for field in Params.__dataclass_fields__) == SECTION_NAMES


def readers(section: str) -> set[str]:
    """Stages whose dvc.yaml params name the section or one of its keys."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name for name, stage in stages.items()
            if any(str(p).split(".")[0] == section for p in stage.get("params", []))}


def changed(repo, what: str) -> set[str]:
    """Stages `dvc status` reports with ``what`` (a file, or a params key) among their changed
    dependencies; DVC names a params key, or its whole section when all of it is tracked."""
    status = json.loads(dvc(repo, "status", "--json").strip().splitlines()[-1])
    found = set()
    for stage, entries in status.items():
        deps = next((e["changed deps"] for e in entries if isinstance(e, dict) and "changed deps" in e), {})
        params = deps.get("params.yaml") if isinstance(deps.get("params.yaml"), dict) else {}
        if what in deps or any(what == key or what.startswith(key + ".") for key in params):
            found.add(stage)
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy with the committed dvc.lock: `dvc status` then names what changed since the run."""
    copy = copy_repo(tmp_path_factory.mktemp("sections") / "repo")
    shutil.copy(REPO / "dvc.lock", copy / "dvc.lock")
    return copy


@pytest.mark.parametrize("section", SECTIONS)
def test_a_help_text_edit_re_runs_only_the_stages_reading_the_section(repo, section):
    module = repo / "src" / "folio_llm" / "sections" / f"{section}.py"
    original = module.read_text(encoding="utf-8")
    edited, count = re.subn(r'setting\(\s*"', 'setting(\n        "(edited) ', original, count=1)
    assert count == 1
    module.write_text(edited, encoding="utf-8")
    try:
        assert changed(repo, f"src/folio_llm/sections/{section}.py") == readers(section)
    finally:
        module.write_text(original, encoding="utf-8")


def test_a_value_edit_re_runs_only_the_stages_reading_it(repo):
    params = repo / "params.yaml"
    original = params.read_text(encoding="utf-8")
    values = yaml.safe_load(original) or {}
    values.setdefault("eval", {})["limit"] = 7
    params.write_text(yaml.safe_dump(values), encoding="utf-8")
    try:
        assert changed(repo, "eval.limit") == {"evaluate"}
    finally:
        params.write_text(original, encoding="utf-8")

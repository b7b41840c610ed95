"""Each stage in dvc.yaml declares exactly the package modules its script runs.

The import closure is computed from the code: every ``import folio_llm...`` at any depth (an
import inside a function still runs that module), plus the ``__init__`` of every package on
the way. A module the closure reaches but dvc.yaml misses would leave stale outputs marked up
to date; a module declared but never run would re-run the stage for nothing.
"""
import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = "folio_llm"
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Names of the package modules ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            # `from folio_llm.a import b` imports module a.b when b is one
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if module_file(f"{node.module}.{alias.name}")}
    return found


def closure(script: Path) -> set[str]:
    """Repo-relative paths of every package file that running ``script`` imports."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        path = pending.pop()
        for name in imported_modules(path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # the packages on the way run their __init__
                found = module_file(".".join(parts[:depth]))
                if found and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return {str(p.relative_to(REPO)) for p in seen}


def declared(deps: list[str]) -> set[str]:
    """The package files a stage's deps cover (a folder covers every .py file under it)."""
    files: set[str] = set()
    for dep in deps:
        path = REPO / dep
        if not dep.startswith("src/"):
            continue
        files |= {str(p.relative_to(REPO)) for p in path.rglob("*.py")} if path.is_dir() else {dep}
    return files


def problems(stages: dict) -> list[str]:
    found = []
    for name, stage in stages.items():
        scripts = [word for word in stage["cmd"].split() if word.startswith("scripts/") and word.endswith(".py")]
        if len(scripts) != 1:
            found.append(f"{name}: runs {scripts or 'no script'}, expected one scripts/<stage>.py")
            continue
        needed, listed = closure(REPO / scripts[0]), declared(stage.get("deps", []))
        found += [f"{name}: imports {path} but does not declare it" for path in sorted(needed - listed)]
        found += [f"{name}: declares {path} but never imports it" for path in sorted(listed - needed)]
        if scripts[0] not in stage.get("deps", []):
            found.append(f"{name}: does not declare its script {scripts[0]}")
    return found


@pytest.fixture(scope="module")
def stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_every_stage_declares_exactly_the_modules_it_runs(stages):
    assert problems(stages) == []


def test_a_missing_dependency_is_caught(stages):
    evaluate = dict(stages["evaluate"])
    evaluate["deps"] = [d for d in evaluate["deps"] if d != "src/folio_llm/models.py"]
    assert problems({"evaluate": evaluate}) == ["evaluate: imports src/folio_llm/models.py but does not declare it"]


def test_an_import_inside_a_function_counts(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("def run():\n    from folio_llm.predict import read_requests\n", encoding="utf-8")
    assert "src/folio_llm/predict.py" in closure(script)
    assert "src/folio_llm/__init__.py" in closure(script)


def test_no_stage_runs_predict_or_the_console_command(stages):
    """A change to predict or to the `folio-llm` group must not re-run (or retrain) anything."""
    for name, stage in stages.items():
        script = next(w for w in stage["cmd"].split() if w.startswith("scripts/"))
        assert not {"src/folio_llm/predict.py", "src/folio_llm/cli.py",
                    "src/folio_llm/commands/predict.py"} & closure(REPO / script), name


def import_cycles() -> list[list[str]]:
    """Every circle of package modules importing each other (at any depth of a file), each
    once, from its smallest name."""
    graph = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imported_modules(path) if module_file(m) and m != name}
    cycles = set()

    def walk(start: str, node: str, trail: list[str]) -> None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                cycles.add(tuple(trail))
            elif nxt not in trail and nxt > start:
                walk(start, nxt, trail + [nxt])

    for start in graph:
        walk(start, start, [start])
    return sorted(list(c) for c in cycles)


def test_no_module_imports_itself_through_others():
    """A circle hidden by an import inside a function still ties the modules into one concern."""
    assert import_cycles() == []

import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO
from folio_llm.cli import main
from folio_llm.params import ParamsError, as_dict, load_params, parse_params


def test_repo_params_are_the_embedded_defaults():
    assert as_dict(load_params(REPO / "params.yaml")) == as_dict(parse_params({}))


@pytest.mark.parametrize(
    "values, key",
    [
        ({"sourc": {}}, "sourc"),
        ({"source": {"sample_sise": 3}}, "source.sample_sise"),
        ({"source": {"sample_size": "many"}}, "source.sample_size"),
        ({"source": {"kind": "csv"}}, "source.kind"),
        ({"seed": 1.5}, "seed"),
        ({"dataset": {"split": {"train": "x"}}}, "dataset.split.train"),
        ({"dataset": {"clauses": {"title": "For {title}"}}}, "dataset.clauses.title"),
        ({"denormalize": {"fields": {"title": 3}}}, "denormalize.fields.title"),
        ({"dataset": {"split": {"train": 0.5, "valid": 0.1, "test": 0.1}}}, "dataset.split"),
        ({"dataset": {"prompt_fields": ["title", "notes"]}}, "dataset.prompt_fields"),
        ({"dataset": {"target_fields": ["title", "notes"]}}, "dataset.target_fields"),
        ({"train": {"seed": -1}}, "train.seed"),
        ({"eval": {"open_below": {"contributor": 0.7}}}, "eval.open_below"),
        ({"eval": {"open_below": {"contributors": 7}}}, "eval.open_below"),
    ],
)
def test_bad_params_name_the_key(values, key):
    with pytest.raises(ParamsError) as err:
        parse_params(values)
    assert key in str(err.value)


def test_partial_params_keep_other_defaults():
    params = parse_params({"source": {"sample_size": 10}, "dataset": {"split": {"train": 0.9, "valid": 0.05, "test": 0.05}}})
    assert params.source.sample_size == 10
    assert params.source.kind == "marc"
    assert params.dataset.split.train == 0.9
    assert params.dataset.prompt_fields[0] == "title"


def test_cli_refuses_bad_params_in_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"dataset": {"list_separator": 5}}))
    result = CliRunner().invoke(main, ["check-params", "--params", str(bad)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "dataset.list_separator" in lines[0]
    assert "Traceback" not in result.output


def test_cli_refuses_invalid_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    result = CliRunner().invoke(main, ["check-params", "--params", str(bad)])
    assert result.exit_code == 1 and "not valid YAML" in result.output

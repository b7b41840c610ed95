"""dvc.yaml and the commands name the same artefacts: every path a stage's command line passes
is the default of that option, so a command run by hand writes where the pipeline does."""
import ast
import importlib
import shlex

import click
import yaml

from conftest import REPO


def stage_command(script: str) -> click.Command:
    """The click command a scripts/<stage>.py file runs."""
    tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
    imported = next(node for node in tree.body if isinstance(node, ast.ImportFrom))
    return getattr(importlib.import_module(imported.module), imported.names[0].name)


def passed_options(command: click.Command, words: list[str]) -> dict[str, str]:
    """{option name: value} of the words of a command line (flags and positionals left out)."""
    by_flag = {flag: option for option in command.params if isinstance(option, click.Option) for flag in option.opts}
    found = {}
    for flag, value in zip(words, words[1:]):
        if flag in by_flag and not by_flag[flag].is_flag:
            found[by_flag[flag].name] = value
    return found


def test_each_path_a_stage_passes_is_its_commands_default():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    checked, differ = 0, []
    for name, stage in stages.items():
        words = shlex.split(stage["cmd"])
        command = stage_command(words[1])
        defaults = {option.name: option.default for option in command.params}
        for option, value in passed_options(command, words[2:]).items():
            if value.startswith("${"):
                continue  # a params value, not an artefact path
            if not isinstance(defaults[option], str):
                continue  # a required option: no default to differ from
            checked += 1
            if defaults[option] != value:
                differ.append(f"{name}: {option} is {value} in dvc.yaml, {defaults[option]} in the command")
    assert differ == []
    assert checked >= 20

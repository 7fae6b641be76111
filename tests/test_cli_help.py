"""Every `labeler` command and option is described, defaults are shown as values, and README's
"Command line" section names only commands and options that exist."""
import argparse
import re
from pathlib import Path

import pytest

from labeler.cli import _parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_NAME = re.compile(r"\b[a-z_]+\.[A-Z][A-Z_]{2,}\b")   # e.g. engine.clean.DEFAULT_DUPLICATE_THRESHOLD


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def described_actions(command: argparse.ArgumentParser):
    return [action for action in command._actions if not isinstance(action, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_exits_0_and_describes_the_command_and_every_option(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    command = subcommands()[name]
    assert command.description and "".join(command.description.split()) in "".join(shown.split())
    for action in described_actions(command):
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"labeler {name}: {label} has no help"
        assert not PYTHON_NAME.search(action.help), f"labeler {name}: {label} shows a Python name: {action.help!r}"
        has_default = action.default not in (None, False, argparse.SUPPRESS) and not action.required
        if has_default and action.option_strings:
            assert "default" in action.help, f"labeler {name}: {label} hides its default {action.default!r}"


def test_top_level_help_lists_every_command_with_its_description(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = "".join(capsys.readouterr().out.split())          # argparse wraps lines, at hyphens too
    for name, command in subcommands().items():
        assert "".join(f"{name} {command.description}".split()) in shown


def test_commands_on_a_folder_default_to_the_demo():
    for name, command in subcommands().items():
        folder = [action for action in command._actions if action.dest == "folder"]
        if folder:
            assert folder[0].nargs == "?" and "built-in demo" in folder[0].help, name
    assert set(subcommands()) - {name for name, c in subcommands().items()
                                 if any(a.dest == "folder" for a in c._actions)} == {"backbones", "download", "serve-model"}
    # (a download's FOLDER is where the images go: no default; serve-model takes a model, not a folder)


def readme_commands() -> list[tuple[str, set[str]]]:
    """(command, options) of each `labeler ...` line (with its continuation lines) in the Command line section."""
    text = README.read_text()
    section = text[text.index("## Command line\n"):]
    section = section[:section.index("\n## ", 1)]
    block = section[section.index("```bash\n") + 8:]
    block = block[:block.index("```")]
    commands: list[tuple[str, set[str]]] = []
    for line in block.splitlines():
        code = line.split("  #")[0]
        if line.startswith("labeler "):
            commands.append((line.split()[1], set()))
        options = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", code))
        commands[-1][1].update(options)
    return commands


def test_readme_command_line_section_lists_every_command_with_options_that_exist():
    parsers = subcommands()
    listed = readme_commands()
    assert sorted({name for name, _ in listed}) == sorted(parsers)
    for name, options in listed:
        known = {option for action in parsers[name]._actions for option in action.option_strings}
        assert options <= known, f"README: labeler {name} shows {sorted(options - known)}, which it does not take"

"""Every code block of README.md runs as written: the Python blocks are executed, every
`spikebridge` command line of the shell blocks is parsed by the real parser (options that exist,
values in bounds; nothing is trained or evaluated)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _command_lines() -> list[str]:
    lines = []
    for block in _blocks("sh"):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("spikebridge "):
                lines.append(line)
    return lines


def test_the_readme_has_python_and_commands():
    assert _blocks("python") and len(_command_lines()) >= 10


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_blocks_run_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[index], f"README.md python block {index + 1}", "exec"), {})


@pytest.mark.parametrize("line", _command_lines())
def test_command_lines_parse(line, monkeypatch):
    from spikebridge import cli

    # `--device cuda` is a GPU machine's command
    monkeypatch.setattr(cli.arguments, "device_name", str)
    argv = [token for token in shlex.split(line)[1:]]
    argv = [token.strip("[]") for token in argv]  # usage syntax: [--resume]
    args, unknown = cli.build_parser().parse_known_args(argv)
    assert not unknown, f"{line}: unknown {unknown}"
    assert getattr(args, "func", None) is not None, line

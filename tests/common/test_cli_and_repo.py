"""common.cli.ArgumentParser, and the repository explaining itself (no citations of notes kept outside it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NoReturn

import pytest

from common.cli import ArgumentParser

REPO = Path(__file__).resolve().parents[2]


def _parser() -> ArgumentParser:
    top = ArgumentParser(prog="tool")
    top.add_argument("--top")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--fast", action="store_true")
    modes = run.add_subparsers(dest="mode", required=True)
    modes.add_parser("now").add_argument("--count", type=int)
    return top


def test_unknown_option_is_reported_by_the_innermost_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    assert parser.parse_args(["--top", "x", "run", "--fast", "now", "--count", "2"]).count == 2
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["run", "now", "--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tool run now ") and "unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--bogus", "now"])
    assert capsys.readouterr().err.startswith("usage: tool run ")


def test_top_level_parse_known_args_still_returns_extras() -> None:
    top = ArgumentParser(prog="tool")
    top.add_argument("--level")
    assert top.parse_known_args(["--level", "1", "rest"])[1] == ["rest"]


def test_a_subclass_keeps_its_error_handling_in_subcommands() -> None:
    class Raising(ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise ValueError(f"{self.prog}: {message}")

    top = Raising(prog="tool")
    top.add_subparsers(dest="command").add_parser("go")
    with pytest.raises(ValueError, match=r"^tool go: unrecognized arguments: -x$"):
        top.parse_args(["go", "-x"])


# Notes that live outside this repository: code and docs must state the fact, not point there.
_OUTSIDE = re.compile(
    r"§|shared/research|research notes|research/\w|\b(?:contrast|kata-policy|kata-lifecycle|peers|vm-harness|"
    r"atls-python|anchors(?:-2026)?)\.md\b"
)
_TEXT = {".py", ".pyi", ".proto", ".md", ".rego", ".sh", ".toml", ".service", ".txt"}


def _repo_texts() -> list[Path]:
    roots = [REPO / name for name in ("common", "guest", "initializer", "meshproxy", "image", "attestation",
                                      "coordinator", "tools", "tests", "docs", ".ci")]
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    for root in roots:
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.suffix in _TEXT and p.is_file()
                      and "__pycache__" not in p.parts and not p.name.endswith(("_pb2.py", "_pb2.pyi"))]
    return files


def test_no_comment_or_doc_cites_notes_outside_the_repo() -> None:
    this = Path(__file__).resolve()
    found = []
    for path in _repo_texts():
        if path.resolve() == this:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if _OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_no_bytecode_is_tracked() -> None:
    git_index = REPO / ".git"
    if not git_index.exists():
        pytest.skip("not a git checkout")
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout.splitlines()
    assert [f for f in tracked if f.endswith((".pyc", ".pyo")) or "__pycache__/" in f] == []

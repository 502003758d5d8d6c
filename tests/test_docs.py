"""The README is the manual: its generated parts must match the code."""

from __future__ import annotations

from conftest import ROOT

from tasks import config


def test_readme_configuration_reference_matches_the_defaults() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
    section = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert section.strip() == config.reference(), "run: python -m tasks.config --reference"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bin/setup && bin/test" in readme and "bin/setup && bin/test" in ci
    assert "bin/setup && .venv/bin/doit demo" in readme

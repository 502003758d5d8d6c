"""The README and docs/ are the manual: generated parts match the code, links lead somewhere."""

from __future__ import annotations

import re

from conftest import ROOT, Project
from patchgate import config


def test_configuration_reference_matches_the_defaults() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    begin, end = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
    section = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert section.strip() == config.reference(), "run: python -m patchgate.config --reference"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bin/setup && bin/test" in readme and "bin/setup && bin/test" in ci
    assert "bin/setup && .venv/bin/doit demo" in readme


def test_doit_help_of_a_task_shows_its_variables(project: Project) -> None:
    res = project.run("help", "verify")
    assert res.code == 0, res.out
    lines = res.out.splitlines()
    assert lines[0].startswith("verify  Verify patches"), res.out
    assert any(line.startswith("patch=PATH|GLOB|A,B") for line in lines), res.out
    assert "issue=ID" in res.out and "allow_gates_fail=1" in res.out


def test_doit_help_without_a_task_is_doits_own(project: Project) -> None:
    res = project.run("help")
    assert res.code == 0, res.out
    assert "show task usage" in res.out


def test_readme_is_short_and_every_local_link_leads_to_a_file() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGES.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"

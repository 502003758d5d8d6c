"""Issue 12: the holes an attacker found stay closed. Real git, real bwrap, real doit runs."""

from __future__ import annotations

import stat
from pathlib import Path

from conftest import ADD_MUL, Project, ProjectFactory, git, script
from test_promote import add_remote, head

HOOKS = (
    "pre-commit", "post-commit", "post-checkout", "post-index-change", "reference-transaction",
    "pre-push", "post-rewrite", "pre-auto-gc", "post-merge",
)  # fmt: skip


def hook_text(marker: Path) -> str:
    return f'#!/bin/sh\necho "$0" >> {marker}\n'


def land(project: Project, issue: str, text: str) -> None:
    patch = project.patch(f"{issue}.py", text)
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    res = project.run("promote", f"issue={issue}")
    assert res.code == 0, res.out
    assert res.summary["PUSH"] == "OK"


# --- 2. hooks never run outside the jail -----------------------------------------------------


def test_hooks_a_patch_writes_under_a_relative_hooks_path_never_run(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project()
    bare = add_remote(project)
    git(project.live, "config", "core.hooksPath", "hooks")  # as husky sets it
    marker = tmp_path / "ran.txt"
    names = [f"hooks/{name}" for name in HOOKS]
    body = "\n".join(
        f"Path({name!r}).parent.mkdir(exist_ok=True)\n"
        f"Path({name!r}).write_text({hook_text(marker)!r})\n"
        f"Path({name!r}).chmod(0o755)"
        for name in names
    )
    land(project, "hooks", script(names, body))
    assert (project.live / "hooks" / "pre-push").stat().st_mode & stat.S_IXUSR
    assert git(bare, "rev-parse", "main") == head(project.live)
    assert not marker.exists(), marker.read_text()


def test_live_git_hooks_never_run_during_verify_and_promote(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project()
    add_remote(project)
    marker = tmp_path / "ran.txt"
    hooks = project.live / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in HOOKS:
        (hooks / name).write_text(hook_text(marker))
        (hooks / name).chmod(0o755)
    land(project, "add_mul", ADD_MUL)
    assert not marker.exists(), marker.read_text()

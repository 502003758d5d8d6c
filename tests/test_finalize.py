"""doit finalize: gate live's uncommitted changes in a temporary worktree, then commit and push."""

from __future__ import annotations

import signal

from conftest import Project, ProjectFactory, git, trailers_of
from test_promote import add_remote, events, head

RUFF = {"name": "ruff", "command": ["ruff", "check", "--no-cache", "{files}"], "files": ["*.py"]}
RUFF_FORMAT = {
    "name": "ruff-format",
    "command": ["ruff", "format", "--no-cache", "{files}"],
    "files": ["*.py"],
    "fixes": True,
}


def test_finalize_gates_commits_and_pushes_lives_changes(make_project: ProjectFactory) -> None:
    project = make_project(gates=[RUFF], operator="bob")
    bare = add_remote(project)
    ops = project.live / "calc" / "ops.py"
    ops.write_text(ops.read_text() + "\n\ndef neg(a: int) -> int:\n    return -a\n")
    (project.live / "calc" / "extra.py").write_text('"""Extra."""\n\nEXTRA = 1\n')
    (project.live / "README.txt").unlink()
    (project.live / "calc" / "__pycache__").mkdir()
    (project.live / "calc" / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    base = head(project.live)
    res = project.run("finalize", "message=calc: neg and extra")
    assert res.code == 0, res.out
    sha = head(project.live)
    assert res.summary["RESULT"] == "SUCCESS" and res.summary["COMMIT"] == sha
    assert res.summary["PUSH"] == "OK" and git(bare, "rev-parse", "main") == sha
    assert res.summary["FILES"] == "README.txt, calc/extra.py, calc/ops.py"
    assert git(project.live, "rev-parse", "HEAD^") == base
    assert git(project.live, "status", "--porcelain") == ""
    assert (project.live / "calc" / "__pycache__" / "x.pyc").read_bytes() == b"ignored"
    fields = trailers_of(project.live)
    assert fields["Patchgate-Trigger"] == "finalize"
    assert fields["Patchgate-Verification"] == "pass; gates: ruff=pass"
    assert fields["Patchgate-Files"] == "README.txt, calc/extra.py, calc/ops.py"
    assert fields["Patchgate-Operator"] == "bob"
    (apply,) = events(project, "apply")
    assert apply["trigger"] == "finalize" and apply["commit_hash"] == sha
    assert not (project.path / "patches" / "workspaces" / "issue_.finalize").exists()


def test_finalize_gate_failure_commits_nothing(make_project: ProjectFactory) -> None:
    project = make_project(gates=[RUFF])
    add_remote(project)
    (project.live / "calc" / "bad.py").write_text("import os\n")  # F401: unused import
    before = project.state()
    res = project.run("finalize", "message=bad")
    assert res.code != 0
    assert res.summary["STAGE"] == "GATES"
    assert "F401" in res.summary["REASON"]
    assert project.state() == before
    assert events(project, "promote_fail")[0]["stage"] == "GATES"


def test_fixer_edits_are_committed_and_written_back_to_live(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[RUFF_FORMAT, RUFF])
    add_remote(project)
    (project.live / "calc" / "fmt.py").write_text("X=[1,2 ,3]\n")
    res = project.run("finalize", "message=fmt")
    assert res.code == 0, res.out
    assert (project.live / "calc" / "fmt.py").read_text() == "X = [1, 2, 3]\n"
    assert git(project.live, "show", "HEAD:calc/fmt.py") == "X = [1, 2, 3]"
    assert git(project.live, "status", "--porcelain") == ""


def test_finalize_needs_a_message_and_changes(project: Project) -> None:
    res = project.run("finalize")
    assert res.code != 0 and 'finalize needs message="' in res.summary["REASON"]
    res = project.run("finalize", "message=nothing")
    assert res.code != 0 and "nothing to finalize" in res.summary["REASON"]


def test_kill_after_the_finalize_commit_is_pushed_by_the_next_finalize(
    make_project: ProjectFactory,
) -> None:
    project = make_project()
    bare = add_remote(project)
    (project.live / "NEW.txt").write_text("new\n")
    killed = project.run(
        "finalize", "message=new file", env={"PATCHGATE_FAULT": "finalize-committed"}
    )
    assert killed.code == -signal.SIGKILL
    sha = head(project.live)
    assert git(bare, "rev-parse", "main") != sha
    res = project.run("finalize")
    assert res.code == 0, res.out
    assert f"had committed {sha[:12]}" in res.out
    assert res.summary["COMMIT"] == sha and git(bare, "rev-parse", "main") == sha
    again = project.run("finalize", "message=again")
    assert again.code != 0 and "nothing to finalize" in again.summary["REASON"]

"""Concurrency: parallel verifies, racing promotions, a verify while a promotion lands.

Promotion is single-writer (tasks/lock.py); so is each issue's workspace (one command at a time
verifies or promotes an issue), while different issues verify in parallel: each has its own
workspace, doit's state is sqlite (concurrent writers lose nothing), provenance appends take
their own lock. The live guard of a verification explains HEAD moves that live's reflog
records as patchgate landings, and nothing else (tasks/liveguard.py, ``check_live_guard``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Project, Result, git, run_env, script
from doitcmd import doit_argv
from test_faults import add_remote, assert_chain, assert_no_debris, doit, new_project

N_PATCHES = 8
QUICK = {"name": "quick", "command": ["sh", "-c", "test -f README.txt"], "files": ["*"]}


def note(i: int) -> str:
    return script(
        [f"docs/p{i}.txt"],
        f'Path("docs").mkdir(exist_ok=True)\nPath("docs/p{i}.txt").write_text("note {i}\\n")',
    )


def start(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        doit_argv(project.path, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env(),
    )


def finish(run: subprocess.Popen[str], timeout: float = 120) -> Result:
    out, _ = run.communicate(timeout=timeout)
    return Result(run.returncode, out)


def test_eight_patches_verified_four_at_a_time(tmp_path: Path, calc_template: Path) -> None:
    project = new_project(tmp_path / "project", calc_template, gates=[QUICK])
    for i in range(N_PATCHES):
        project.patch(f"p{i}.py", note(i))
    before = project.state()
    res = doit(project, "-n", "4", "-P", "process", "verify", "patch=patches/p*.py")
    assert "Traceback" not in res.out
    assert res.code == 0, res.out
    assert f"{N_PATCHES} passed, 0 failed" in res.out
    assert res.out.count("RESULT: SUCCESS") == N_PATCHES
    ids = set()
    for i in range(N_PATCHES):
        ws = project.ws(f"p{i}")
        result = json.loads((ws / "result.json").read_text())
        assert result["verification_status"] == "pass"
        assert result["files"] == [f"docs/p{i}.txt"]  # its own change, nobody else's
        ids.add(result["patch_id"])
        tree = git(ws / "repo", "ls-tree", "-r", "--name-only", result["tree"], "docs")
        assert tree.splitlines() == [f"docs/p{i}.txt"]
        logs = list((project.path / "patches" / "logs").glob(f"*_issue_p{i}.log"))
        assert len(logs) == 1
        text = logs[0].read_text()
        assert "RESULT: SUCCESS" in text and f"FILES: docs/p{i}.txt" in text
        assert all(f"docs/p{j}.txt" not in text for j in range(N_PATCHES) if j != i)
    events = assert_chain(project)
    passed = [e for e in events if e["event"] == "verify_pass"]
    assert len(passed) == N_PATCHES and {e["patch_id"] for e in passed} == ids
    assert project.state() == before
    assert_no_debris(project)
    assert len(git(project.live, "worktree", "list").splitlines()) == N_PATCHES + 1
    rerun = doit(project, "-n", "4", "-P", "process", "verify", "patch=patches/p*.py")
    assert rerun.code == 0 and "\n.  " not in "\n" + rerun.out, rerun.out  # all up to date


@pytest.fixture
def remote_project(tmp_path: Path, calc_template: Path) -> Project:
    project = new_project(tmp_path / "project", calc_template, gates=[])
    add_remote(project)
    return project


def test_two_promotions_started_together_one_lands_the_other_fails_fast(
    remote_project: Project,
) -> None:
    project = remote_project
    project.configure(audit_command=["sleep", "2"])  # the winner holds the lock a while
    for issue, name in (("left", "left.txt"), ("right", "right.txt")):
        project.patch(f"{issue}.py", script([name], f'Path("{name}").write_text("{issue}\\n")'))
        assert doit(project, "verify", f"patch=patches/{issue}.py").code == 0
    base = git(project.live, "rev-parse", "HEAD")
    runs = {issue: start(project, "promote", f"issue={issue}") for issue in ("left", "right")}
    started = time.monotonic()
    results = {issue: finish(run) for issue, run in runs.items()}
    landed = [i for i, r in results.items() if r.code == 0]
    refused = [i for i, r in results.items() if r.code != 0]
    assert len(landed) == 1 and len(refused) == 1, {i: r.out for i, r in results.items()}
    winner, loser = landed[0], refused[0]
    lost = results[loser]
    assert "Traceback" not in lost.out
    assert lost.summary["STAGE"] == "PREFLIGHT"
    assert f"pid {runs[winner].pid}" in lost.summary["REASON"]
    assert f"issue {winner}" in lost.summary["REASON"]
    assert time.monotonic() - started < 60
    first = git(project.live, "rev-parse", "HEAD")
    assert git(project.live, "rev-parse", "HEAD^") == base
    again = doit(project, "promote", f"issue={loser}")
    assert again.code == 0, again.out
    assert f".  verify:{loser}-apply" in again.out  # re-verified on the new base
    assert git(project.live, "rev-parse", "HEAD^") == first
    assert git(project.path / "remote.git", "rev-parse", "main") == git(
        project.live, "rev-parse", "HEAD"
    )
    assert git(project.live, "status", "--porcelain") == ""
    assert_chain(project)
    assert_no_debris(project)


HOLD = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)\n"


def hold_gate(project: Project) -> Path:
    """Configure a gate for slow.txt only (other patches skip it) that runs until the test
    releases it: ``release(go)`` with the path returned. The test does its part while the gate
    runs, however slowly a loaded machine starts the next doit process."""
    signal = project.path.parent / "signal"
    signal.mkdir(exist_ok=True)
    go = signal / "go"
    slow = {"name": "slow", "command": ["{python}", "-c", HOLD, str(go)], "files": ["slow.txt"]}
    project.configure(gates=[{**slow, "timeout": 120}], jail_binds=[str(signal)])
    return go


def release(go: Path) -> None:
    go.touch()


def wait_for_gate(project: Project, issue: str, run: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        logs = list((project.path / "patches" / "logs").glob(f"*_issue_{issue}.log"))
        if logs and "gate slow:" in logs[-1].read_text():
            return
        assert run.poll() is None and time.monotonic() < deadline, "the gate never started"
        time.sleep(0.05)


def test_a_promotion_landing_during_a_verify_does_not_fail_it(remote_project: Project) -> None:
    project = remote_project
    project.patch("landed.py", script(["landed.txt"], 'Path("landed.txt").write_text("l\\n")'))
    assert doit(project, "verify", "patch=patches/landed.py").code == 0
    go = hold_gate(project)
    project.patch("slow.py", script(["slow.txt"], 'Path("slow.txt").write_text("s\\n")'))
    verifying = start(project, "verify", "patch=patches/slow.py")
    wait_for_gate(project, "slow", verifying)
    promoted = doit(project, "promote", "issue=landed")
    assert promoted.code == 0, promoted.out
    release(go)
    res = finish(verifying)
    assert res.code == 0, res.out  # live's HEAD moved, but by patchgate's own landing
    assert res.summary["RESULT"] == "SUCCESS"
    result = json.loads((project.ws("slow") / "result.json").read_text())
    assert result["verification_status"] == "pass"
    assert_chain(project)


def test_anything_else_moving_live_during_a_verify_still_fails_it(
    remote_project: Project,
) -> None:
    project = remote_project
    go = hold_gate(project)
    project.patch("slow.py", script(["slow.txt"], 'Path("slow.txt").write_text("s\\n")'))
    verifying = start(project, "verify", "patch=patches/slow.py")
    wait_for_gate(project, "slow", verifying)
    (project.live / "README.txt").write_text("edited behind patchgate's back\n")
    git(project.live, "commit", "-q", "-am", "not a patchgate landing")
    release(go)
    res = finish(verifying)
    assert res.code != 0
    assert res.summary["STAGE"] == "VERIFY"
    assert "the live repository changed during verification" in res.summary["REASON"]


def test_one_command_at_a_time_works_in_an_issues_workspace(remote_project: Project) -> None:
    """A second verify of an issue being promoted would apply its own patch in the same worktree:
    the promotion's gates would judge one tree and land the other. It is refused at once."""
    project = remote_project
    go = hold_gate(project)
    project.patch("slow.py", script(["slow.txt"], 'Path("slow.txt").write_text("s\\n")'))
    project.patch("other.py", script(["slow.txt"], 'Path("slow.txt").write_text("other\\n")'))
    before = project.state()
    promoting = start(project, "promote", "patch=patches/slow.py", "issue=z")
    wait_for_gate(project, "z", promoting)
    second = doit(project, "verify", "patch=patches/other.py", "issue=z")
    assert second.code != 0 and "Traceback" not in second.out, second.out
    assert second.summary["STAGE"] == "PREFLIGHT"
    reason = second.summary["REASON"]
    assert f"issue z is busy: pid {promoting.pid} (doit verify" in reason, reason
    release(go)
    res = finish(promoting)
    assert res.code == 0, res.out
    assert project.state() != before
    assert git(project.live, "show", "HEAD:slow.txt") == "s"  # the patch its gates judged
    assert_chain(project)

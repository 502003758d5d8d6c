"""Loading declares, running does: what doit starts while it only loads patchgate's tasks.

``git`` and ``bwrap`` are wrapped by scripts first on PATH that log their argv, then exec the
real programs: every process patchgate starts is counted, whatever module starts it.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
from conftest import ADD_MUL, Project, ProjectFactory, git, make_repo
from patchgate import journal

# git subcommands that only read (what loading may run, if anything).
READING = {
    "cat-file",
    "config",
    "diff",
    "for-each-ref",
    "hash-object",  # without -w: a content's id, nothing stored
    "log",
    "ls-files",
    "ls-tree",
    "merge-base",
    "remote",
    "rev-list",
    "rev-parse",
    "show",
    "status",
    "symbolic-ref",
}


def wrappers(bin_dir: Path, log: Path) -> dict[str, str]:
    """``git`` and ``bwrap`` scripts that log ``NAME ARGV`` to ``log`` and exec the real one."""
    bin_dir.mkdir()
    for name in ("git", "bwrap"):
        real = shutil.which(name)
        assert real is not None, f"{name} is needed for this test"
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >> '{log}'\nexec '{real}' \"$@\"\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def subcommand(argv: list[str]) -> str:
    """The git subcommand of ``git [-c X] [-C X] [--flag] SUB ...``."""
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "-C"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return ""


def started(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


@pytest.fixture
def interrupted(make_project: ProjectFactory, tmp_path: Path) -> Project:
    """A verified issue whose promotion was killed mid-copy (the journal is there), and live's
    branch behind its remote (another clone pushed since)."""
    project = make_project()
    bare = project.path / "remote.git"
    git(project.path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(project.live, "remote", "add", "origin", str(bare))
    git(project.live, "push", "-q", "origin", "main")
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    killed = project.run("promote", "issue=add_mul", env={"PATCHGATE_FAULT": "promote-copied"})
    assert killed.code == -signal.SIGKILL
    other = make_repo(tmp_path / "other", {"README.txt": "other\n"})
    git(other, "remote", "add", "origin", str(bare))
    git(other, "fetch", "-q", "origin")
    git(other, "reset", "-q", "--hard", "origin/main")
    (other / "NEWS.txt").write_text("news\n")
    git(other, "add", "NEWS.txt")
    git(other, "-c", "user.name=O", "-c", "user.email=o@x.invalid", "commit", "-q", "-m", "news")
    git(other, "push", "-q", "origin", "main")
    return project


@pytest.mark.parametrize(
    "command",
    [
        ("list",),
        ("list", "--all"),
        ("help", "promote"),
        ("help", "verify"),
        ("status",),
        # what loading `doit promote issue=ID` (or finalize, rollback) does: every creator
        # runs with the command's variables, as doit list runs them
        ("list", "issue=add_mul"),
        ("list", 'message="x"', "sha=HEAD", "confirm=abc", "operator=o", "reason=r"),
    ],
)
def test_loading_starts_no_jail_and_no_writing_git(
    interrupted: Project, tmp_path: Path, command: tuple[str, ...]
) -> None:
    project = interrupted
    live_before = project.state()
    tracking = git(project.live, "rev-parse", "refs/remotes/origin/main")
    state = sorted((project.path / "patches" / ".state").rglob("*"))
    log = tmp_path / "started.log"
    res = project.run(*command, env=wrappers(tmp_path / "bin", log))
    assert res.code == 0, res.out
    ran = started(log)
    assert not [argv for argv in ran if argv[0] == "bwrap"], ran
    writing = [
        argv
        for argv in ran
        if argv[0] == "git" and (subcommand(argv[1:]) not in READING or "-w" in argv)
    ]
    assert not writing, writing
    if command == ("status",):
        # doit status runs a step, and every step's setup task recovers first (journal.py):
        # by putting the pre-images back, with git only reading
        assert not (project.path / journal.JOURNAL).exists()
        return
    # nothing was recovered, fetched, fast-forwarded or locked
    assert (project.path / journal.JOURNAL).exists()
    assert project.state() == live_before
    assert git(project.live, "rev-parse", "refs/remotes/origin/main") == tracking
    assert sorted((project.path / "patches" / ".state").rglob("*")) == state


def test_a_promotion_does_the_work_when_it_runs(interrupted: Project, tmp_path: Path) -> None:
    """The same workspace, promoted: recovered, fetched and fast-forwarded, jailed, landed;
    the log shows the order (the wrappers count the real thing)."""
    project = interrupted
    log = tmp_path / "started.log"
    res = project.run("promote", "issue=add_mul", env=wrappers(tmp_path / "bin", log))
    assert res.code == 0, res.out
    assert "recovered: the interrupted promote of add_mul had not committed" in res.out
    ran = started(log)
    subs = [subcommand(argv[1:]) for argv in ran if argv[0] == "git"]
    assert "fetch" in subs and "update-ref" in subs
    assert any(argv[0] == "bwrap" for argv in ran)
    # fetched and fast-forwarded before the verify chain was planned: it landed on that HEAD
    news = git(project.path / "remote.git", "rev-parse", "main^")
    assert git(project.live, "rev-parse", "HEAD^") == news
    assert (project.live / "NEWS.txt").read_text() == "news\n"
    assert not (project.path / journal.JOURNAL).exists()


def test_a_promotion_with_worker_processes(interrupted: Project) -> None:
    """doit -n 2 -P process: _promote takes the lock in a worker; the other worker's steps
    count it as their run's (lock.py), and the landing goes through."""
    project = interrupted
    res = project.run("-n", "2", "-P", "process", "promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS" and res.summary["PUSH"] == "OK", res.out
    assert (project.live / "NEWS.txt").read_text() == "news\n"


def test_verify_and_promote_in_one_command(make_project: ProjectFactory) -> None:
    """doit verify patch=P promote issue=P: both creators plan P's verify chain; it is declared
    once (verify.once) and the promotion lands what verify checked."""
    project = make_project()
    patch = project.patch("add_mul.py", ADD_MUL)
    res = project.run("verify", f"patch={patch}", "promote", "issue=add_mul", "message=mul")
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS" and res.summary["PUSH"] == "SKIPPED", res.out
    assert res.out.count(".  verify:add_mul-apply") == 1, res.out
    assert git(project.live, "log", "-1", "--format=%s") == "mul"

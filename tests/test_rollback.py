"""doit rollback: plan a revert, confirm it, verify it like a patch, land, push, record."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ADD_MUL, DODO, Project, ProjectFactory, Result, git, parsed_trailers
from patchgate import provenance, revertplan, trailers
from patchgate.config import DEFAULT_GATES

OPERATOR = ("operator=alice", "reason=tests fail after it")


def commit_in(repo: Path, name: str, text: str, message: str = "live work") -> str:
    """A commit made by hand (not by patchgate); returns its sha."""
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def read(repo: Path, name: str) -> str:
    return (repo / name).read_text()


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def add_remote(project: Project) -> Path:
    bare = project.path / "remote.git"
    git(project.path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(project.live, "remote", "add", "origin", str(bare))
    git(project.live, "push", "-q", "origin", "main")
    return bare


def plan(project: Project, sha: str) -> tuple[Result, str]:
    """``doit rollback sha=S``; the plan's token (from its CONFIRM line)."""
    res = project.run("rollback", f"sha={sha}")
    assert res.code == 0, res.out
    found = re.search(r"confirm=([0-9a-f]{12}) ", res.summary["CONFIRM"])
    assert found, res.out
    return res, found.group(1)


def confirm(project: Project, sha: str, token: str, *extra: str, **kw: Any) -> Result:
    return project.run("rollback", f"sha={sha}", f"confirm={token}", *OPERATOR, *extra, **kw)


def events(project: Project, kind: str) -> list[dict[str, Any]]:
    return [e for e in provenance.read_events(str(project.path)) if e["event"] == kind]


def git_store(repo: Path) -> set[str]:
    """Every object and ref file of a repository: equal means git wrote nothing there."""
    found = set()
    for sub in ("objects", "refs"):
        for dirpath, _, names in os.walk(repo / ".git" / sub):
            found.update(os.path.join(dirpath, n) for n in names)
    return found


# --- the plan -------------------------------------------------------------------------------


def test_plan_shows_commit_later_commits_revert_and_token_and_writes_nothing(
    project: Project,
) -> None:
    ops = read(project.live, "calc/ops.py")
    sha = commit_in(
        project.live,
        "calc/ops.py",
        ops + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n",
        "calc: multiply\n\nPatchgate-Patch-Id: add_mul@0123456789ab\nPatchgate-Files: calc/ops.py",
    )
    later = commit_in(
        project.live, "calc/ops.py", "# header\n" + read(project.live, "calc/ops.py"), "header"
    )
    before, store = project.state(), git_store(project.live)
    res, token = plan(project, sha)
    assert res.summary["RESULT"] == "SUCCESS" and res.summary["FILES"] == "calc/ops.py"
    assert res.summary["CONFIRM"] == (
        f'doit rollback sha={sha} confirm={token} operator=NAME reason="…"'
    )
    assert "subject   calc: multiply" in res.out
    assert "patchgate: patch add_mul@0123456789ab; files calc/ops.py" in res.out
    assert f"{later[:12]}  header  (calc/ops.py)" in res.out  # the later commit touching it
    assert "calc/ops.py | 4 ----\n" in res.out  # the --stat of the revert
    assert 'message   Revert "calc: multiply"' in res.out
    assert project.state() == before and git_store(project.live) == store


def test_plan_refuses_no_sha_unknown_off_branch_and_merge_commits(project: Project) -> None:
    res = project.run("rollback")
    assert res.code != 0 and res.summary["REASON"].startswith("rollback needs sha=S")
    res = project.run("rollback", "sha=0123456789abcdef")
    assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT"
    assert "sha=0123456789abcdef is not a commit in live" in res.summary["REASON"]
    base = head(project.live)
    git(project.live, "switch", "-q", "-c", "side")
    side = commit_in(project.live, "SIDE.txt", "side\n", "side work")
    git(project.live, "switch", "-q", "main")
    res = project.run("rollback", f"sha={side}")
    assert res.code != 0 and f"commit {side[:12]} is not on main" in res.summary["REASON"]
    commit_in(project.live, "MAIN.txt", "main\n", "main work")
    git(project.live, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    res = project.run("rollback", "sha=HEAD")
    assert res.code != 0 and "is a merge commit" in res.summary["REASON"]
    assert "roll back the commits the merge brought in one by one" in res.summary["REASON"]
    assert head(project.live) != base


# --- landing --------------------------------------------------------------------------------


def test_confirmed_rollback_of_a_promoted_commit_lands_pushes_records_and_audits(
    make_project: ProjectFactory,
) -> None:
    project = make_project()
    bare = add_remote(project)
    original = read(project.live, "calc/ops.py")
    project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", "patch=patches/add_mul.py").code == 0
    promoted = project.run("promote", "issue=add_mul", "message=calc: multiply")
    assert promoted.code == 0, promoted.out
    sha = promoted.summary["COMMIT"]
    _, token = plan(project, sha)
    res = confirm(project, sha, token, "message=CI run 42: test_mul failed")
    assert res.code == 0, res.out
    revert = head(project.live)
    assert res.summary["RESULT"] == "SUCCESS" and res.summary["COMMIT"] == revert
    assert res.summary["PUSH"] == "OK" and git(bare, "rev-parse", "main") == revert
    assert read(project.live, "calc/ops.py") == original
    assert git(project.live, "status", "--porcelain") == ""
    message = git(project.live, "log", "-1", "--format=%B")
    assert message.startswith(f'Revert "calc: multiply"\n\nThis reverts commit {sha}.\n')
    fields = parsed_trailers(message)
    assert fields["Patchgate-Rollback-Id"].startswith(f"rollback-{sha[:12]}-")
    assert fields["Patchgate-Reverts"] == sha
    assert fields["Patchgate-Reason"] == "tests fail after it"
    assert fields["Patchgate-Operator"] == "alice"
    assert fields["Patchgate-Failure-Context"] == "CI run 42: test_mul failed"
    assert fields["Patchgate-Trigger"] == "doit rollback"
    assert fields["Patchgate-Files"] == "calc/ops.py"
    (event,) = events(project, "rollback")
    assert event["rollback_id"] == fields["Patchgate-Rollback-Id"]
    assert event["revert_commit"] == revert and event["reverted_commit"] == sha
    assert event["patch_id"].startswith("add_mul@") and event["operator"] == "alice"
    assert event["operator_confirmed"] is True and event["reason"] == "tests fail after it"
    assert event["failure_context"] == "CI run 42: test_mul failed" and event["push"] == "OK"
    assert not project.ws(f"rollback-{sha[:12]}").exists()
    audit = project.run("audit")
    assert audit.code == 0, audit.out


def test_a_commit_patchgate_did_not_make_is_labelled_and_recorded_with_no_patch_id(
    project: Project,
) -> None:
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    res, token = plan(project, sha)
    assert "NOT a patchgate commit (no Patchgate-Patch-Id trailer)" in res.out
    done = confirm(project, sha, token)
    assert done.code == 0, done.out
    assert done.summary["PUSH"] == "SKIPPED"
    assert read(project.live, "README.txt") == "calc\n"
    (event,) = events(project, "rollback")
    assert event["patch_id"] == "-" and event["reverted_commit"] == sha


def test_reverting_a_revert_relands_the_original(project: Project) -> None:
    sha = commit_in(project.live, "README.txt", "calc, improved\n", "readme: improve")
    _, token = plan(project, sha)
    assert confirm(project, sha, token).code == 0
    revert = head(project.live)
    res, token = plan(project, revert)
    assert f"reland: {revert[:12]} reverted {sha[:12]}" in res.out
    assert 'message   Reapply "readme: improve"' in res.out
    done = confirm(project, revert, token)
    assert done.code == 0, done.out
    assert read(project.live, "README.txt") == "calc, improved\n"
    assert parsed_trailers(git(project.live, "log", "-1", "--format=%B"))["Patchgate-Reverts"] == (
        revert
    )
    assert [e["reverted_commit"] for e in events(project, "rollback")] == [sha, revert]
    assert project.run("audit").code == 0


# --- refusals -------------------------------------------------------------------------------


def test_without_a_complete_confirmation_nothing_happens(project: Project) -> None:
    project.configure(operator="configured-operator")  # a setting never confirms
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    _, token = plan(project, sha)
    before = project.state()
    cases = [
        (("operator=alice", "reason=x"), "missing confirm=TOKEN"),
        ((f"confirm={token}", "reason=x"), "missing operator=NAME"),
        ((f"confirm={token}", "operator=alice"), 'missing reason="…"'),
        (("confirm=0123456789ab", "operator=alice", "reason=x"), "does not match the plan"),
    ]
    for args, expected in cases:
        res = project.run("rollback", f"sha={sha}", *args)
        assert res.code != 0, args
        assert res.summary["STAGE"] == "ROLLBACK" and expected in res.summary["REASON"], res.out
        assert "\n" not in res.summary["REASON"]
        assert project.state() == before
    assert not events(project, "rollback")


def test_a_token_from_before_live_moved_is_refused(project: Project) -> None:
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    _, token = plan(project, sha)
    commit_in(project.live, "NEWS.txt", "news\n", "unrelated news")
    before = project.state()
    res = confirm(project, sha, token)
    assert res.code != 0 and res.summary["STAGE"] == "ROLLBACK"
    assert "live moved since the plan" in res.summary["REASON"]
    assert project.state() == before


def test_uncommitted_change_in_a_reverted_file_is_refused(project: Project) -> None:
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    _, token = plan(project, sha)
    (project.live / "README.txt").write_text("my work in progress\n")
    before = project.state()
    res = confirm(project, sha, token)
    assert res.code != 0 and res.summary["STAGE"] == "ROLLBACK"
    assert "uncommitted changes in README.txt" in res.summary["REASON"]
    assert project.state() == before


def test_conflicting_revert_is_refused_naming_the_file(project: Project) -> None:
    sha = commit_in(project.live, "README.txt", "calc, first edit\n", "first edit")
    commit_in(project.live, "README.txt", "calc, second edit\n", "second edit")
    before = project.state()
    res = project.run("rollback", f"sha={sha}")
    assert res.code != 0 and res.summary["STAGE"] == "ROLLBACK"
    assert "conflicts with later commits in README.txt" in res.summary["REASON"]
    assert "CONFLICT in README.txt" in res.out
    res = confirm(project, sha, "0123456789ab")
    assert res.code != 0 and "conflicts with later commits in README.txt" in res.summary["REASON"]
    assert project.state() == before
    assert not (project.path / "patches" / "workspaces").exists()


def test_rollback_fails_fast_while_a_promotion_holds_the_lock(project: Project) -> None:
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[2]); "
            "from patchgate import lock; lock.acquire(sys.argv[1], 'add_mul', 'doit promote'); "
            "print('held', flush=True); time.sleep(60)",
            str(project.path),
            str(DODO.parent),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = project.state()
        res = confirm(project, sha, "0123456789ab")
        assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT"
        assert f"pid {holder.pid} (doit promote, issue add_mul" in res.summary["REASON"]
        assert project.state() == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# --- gates ----------------------------------------------------------------------------------


def pytest_gate() -> dict[str, Any]:
    return copy.deepcopy(next(g for g in DEFAULT_GATES if g["name"] == "pytest"))


def test_revert_that_fails_its_gates_does_not_land_unless_allowed(
    make_project: ProjectFactory,
) -> None:
    project = make_project(gates=[pytest_gate()])
    ops = read(project.live, "calc/ops.py")
    commit_in(project.live, "calc/ops.py", ops.replace("a - b", "a + b"), "calc: break sub")
    fix = commit_in(project.live, "calc/ops.py", ops, "calc: fix sub")
    _, token = plan(project, fix)
    before = project.state()
    res = confirm(project, fix, token)
    assert res.code != 0 and res.summary["STAGE"] == "GATES"
    assert "tests/test_ops.py::test_sub failed" in res.summary["REASON"]
    assert project.state() == before and not events(project, "rollback")
    allowed = confirm(project, fix, token, "allow_gates_fail=1")
    assert allowed.code == 0, allowed.out
    fields = parsed_trailers(git(project.live, "log", "-1", "--format=%B"))
    assert fields["Patchgate-Verification"] == "pass; gates: pytest=fail; allow_gates_fail=1"
    (event,) = events(project, "rollback")
    assert event["allow_gates_fail"] is True and event["gates"] == {"pytest": "fail"}


# --- crashes --------------------------------------------------------------------------------


def test_kill_after_the_revert_commit_resumes_at_the_push_with_the_same_token(
    make_project: ProjectFactory,
) -> None:
    project = make_project()
    bare = add_remote(project)
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    git(project.live, "push", "-q", "origin", "main")
    _, token = plan(project, sha)
    killed = confirm(project, sha, token, env={"PATCHGATE_FAULT": "rollback-committed"})
    assert killed.code == -signal.SIGKILL
    revert = head(project.live)
    assert revert != sha and git(bare, "rev-parse", "main") == sha  # landed, not pushed
    unfinished = project.run("rollback", f"sha={sha}")  # the plan says how to finish it
    assert unfinished.code == 0 and f"confirm={token} " in unfinished.summary["CONFIRM"]
    assert "did not finish" in unfinished.summary["NOTE"]
    assert f"had committed {revert[:12]}" in unfinished.out  # recovered before planning
    res = confirm(project, sha, token)
    assert res.code == 0, res.out
    assert f"resuming {res.summary['ROLLBACK_ID']}: its revert {revert[:12]} landed" in res.out
    assert res.summary["COMMIT"] == revert and res.summary["PUSH"] == "OK"
    assert git(bare, "rev-parse", "main") == revert
    # not verified again
    assert ".  rollback:" + trailers.rollback_issue(sha) + "-apply" not in res.out
    assert git(project.live, "status", "--porcelain") == ""
    assert len(events(project, "rollback")) == 1
    again = confirm(project, sha, token)
    assert again.code == 0 and "was already done in" in again.summary["NOTE"]


# --- helpers --------------------------------------------------------------------------------


def test_conflicting_files_are_read_from_git_apply_messages() -> None:
    output = (
        "error: patch failed: calc/ops.py:3\nerror: calc/ops.py: patch does not apply\n"
        "error: gone.txt: does not exist in index\nApplied patch to 'b.txt' with conflicts.\n"
        "U b.txt\nerror: new.txt: already exists in index\n"
    )
    assert revertplan.conflicting_files(output) == ["b.txt", "calc/ops.py", "gone.txt", "new.txt"]


def test_revert_subject_reapplies_a_revert() -> None:
    assert revertplan.revert_subject("calc: multiply") == 'Revert "calc: multiply"'
    assert revertplan.revert_subject('Revert "calc: multiply"') == 'Reapply "calc: multiply"'

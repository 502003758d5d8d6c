"""doit promote: land what was verified; commit, push, archive, record, crash safety, the lock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ADD_MUL,
    CALC,
    DODO,
    ROOT,
    Project,
    ProjectFactory,
    git,
    make_repo,
    parsed_trailers,
    script,
)
from doitcmd import doit_argv
from patchgate import config, journal, landing, promote, provenance, redact
from test_bad_input import twin_files

README_TOO = script(
    ["calc/ops.py", "README.txt"],
    'p = Path("calc/ops.py")\n'
    'p.write_text(p.read_text() + "\\n\\ndef mul(a: int, b: int) -> int:\\n    return a * b\\n")\n'
    'Path("README.txt").write_text("calc, with mul\\n")',
)


def add_remote(project: Project, name: str = "remote.git") -> Path:
    """A bare repository as live's origin, holding live's main."""
    bare = project.path / name
    git(project.path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(bare, "config", "gc.auto", "0")
    git(bare, "config", "receive.autogc", "false")
    git(project.live, "remote", "add", "origin", str(bare))
    git(project.live, "push", "-q", "origin", "main")
    return bare


def verified(project: Project, issue: str = "add_mul", text: str = ADD_MUL) -> str:
    patch = project.patch(f"{issue}.py", text)
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    return patch


def commit_in(repo: Path, name: str, text: str, message: str = "live work") -> str:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", name)
    git(
        repo, "-c", "user.name=Other", "-c", "user.email=o@x.invalid", "commit", "-q", "-m", message
    )
    return git(repo, "rev-parse", "HEAD")


def logs(project: Project) -> str:
    return "".join(p.read_text() for p in (project.path / "patches" / "logs").glob("*.log"))


def events(project: Project, kind: str) -> list[dict[str, object]]:
    return [e for e in provenance.read_events(str(project.path)) if e["event"] == kind]


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def remote_project(make_project: ProjectFactory) -> tuple[Project, Path]:
    project = make_project()
    return project, add_remote(project)


# --- landing ----------------------------------------------------------------------------------


def test_promote_commits_the_verified_tree_pushes_and_archives(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    patch = verified(project)
    result = json.loads((project.ws("add_mul") / "result.json").read_text())
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    sha = head(project.live)
    assert res.summary["RESULT"] == "SUCCESS"
    assert res.summary["COMMIT"] == sha and res.summary["PUSH"] == "OK"
    assert res.summary["FILES"] == "calc/ops.py"
    assert git(project.live, "rev-parse", "HEAD^{tree}") == result["tree"]  # what was tested
    assert git(project.live, "rev-parse", "HEAD^") == result["base_sha"]
    assert git(bare, "rev-parse", "main") == sha
    assert git(project.live, "status", "--porcelain") == ""
    success = project.path / "patches" / "successful"
    names = zipfile.ZipFile(success / "add_mul" / "patched_success.zip").namelist()
    assert "calc/ops.py" in names and not any(".git/" in n for n in names)
    assert (success / "add_mul.py").exists() and not (project.path / patch).exists()
    assert not project.ws("add_mul").exists()
    assert "issue_add_mul" not in git(project.live, "worktree", "list")
    (apply,) = events(project, "apply")
    assert apply["commit_hash"] == sha and apply["push"] == "OK"
    assert apply["files"] == ["calc/ops.py"] and apply["operator_confirmed"] is False
    assert provenance.verify_chain(str(project.path)).ok


def test_trailers_are_read_back_by_git_interpret_trailers(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    project.configure(co_authored_by="Pair Programmer <pair@x.invalid>")
    verified(project)
    res = project.run("promote", "issue=add_mul", "message=calc: multiply", "operator=alice")
    assert res.code == 0, res.out
    message = git(project.live, "log", "-1", "--format=%B")
    assert message.splitlines()[0] == "calc: multiply"
    fields = parsed_trailers(message)
    assert fields["Patchgate-Issue"] == "add_mul"
    assert fields["Patchgate-Patch-Id"].startswith("add_mul@")
    assert fields["Patchgate-Base"] == git(project.live, "rev-parse", "HEAD^")
    assert fields["Patchgate-Trigger"] == "doit promote"
    assert fields["Patchgate-Verification"] == "pass"
    assert fields["Patchgate-Files"] == "calc/ops.py"
    assert fields["Patchgate-Operator"] == "alice"
    assert fields["Co-authored-by"] == "Pair Programmer <pair@x.invalid>"
    (apply,) = events(project, "apply")
    assert apply["operator"] == "alice" and apply["operator_confirmed"] is True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[int]:
    """git daemon on 127.0.0.1 serving ``base`` (push enabled), stopped by its PID."""
    port = free_port()
    exec_path = git(base, "--exec-path")
    daemon = subprocess.Popen(
        (
            os.path.join(exec_path, "git-daemon"),
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("git daemon did not start")
            time.sleep(0.05)
        yield port
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def test_push_to_git_daemon(make_project: ProjectFactory) -> None:
    project = make_project()
    bare = add_remote(project)
    with git_daemon(project.path) as port:
        git(project.live, "remote", "set-url", "origin", f"git://127.0.0.1:{port}/{bare.name}")
        verified(project)
        res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert res.summary["PUSH"] == "OK"
    assert git(bare, "rev-parse", "main") == head(project.live)


def test_already_promoted_issue_reports_and_changes_nothing(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project)
    first = project.run("promote", "issue=add_mul")
    assert first.code == 0, first.out
    before = project.state()
    again = project.run("promote", "issue=add_mul")
    assert again.code == 0, again.out
    assert again.summary["RESULT"] == "SUCCESS"
    assert f"issue add_mul was already promoted in {first.summary['COMMIT']}" in again.out
    assert project.state() == before
    assert len(events(project, "apply")) == 1


def test_users_unrelated_uncommitted_work_survives_byte_identical(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project)
    (project.live / "calc" / "__init__.py").write_text('"""calc, being edited."""\nX = 1\n')
    (project.live / "tests" / "test_ops.py").write_text("# staged edit\n")
    git(project.live, "add", "tests/test_ops.py")
    (project.live / "notes.txt").write_bytes(b"untracked \x00\xff bytes\n")
    before_status = git(project.live, "status", "--porcelain")
    before = {
        p: (project.live / p).read_bytes()
        for p in ("calc/__init__.py", "tests/test_ops.py", "notes.txt")
    }
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert {p: (project.live / p).read_bytes() for p in before} == before
    assert git(project.live, "status", "--porcelain") == before_status  # still staged / untracked
    assert git(project.live, "show", "--name-only", "--format=", "HEAD") == "calc/ops.py"
    assert git(project.live, "stash", "list") == ""


def test_uncommitted_change_in_a_promoted_path_is_refused(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project)
    (project.live / "calc" / "ops.py").write_text("# my work in progress\n")
    before = project.state()
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "PROMOTE"
    assert "uncommitted changes in calc/ops.py" in res.summary["REASON"]
    assert project.state() == before
    (fail,) = events(project, "promote_fail")
    assert fail["stage"] == "PROMOTE"
    assert (project.path / "patches" / "unsuccessful" / "add_mul.py").exists()
    assert (project.path / "patches" / "add_mul.py").exists()  # a copy, not a move


# --- live changed since the base --------------------------------------------------------------


def test_live_moved_elsewhere_reverifies_and_lands(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(project)
    other = commit_in(project.live, "NEWS.txt", "news\n")
    git(project.live, "push", "-q", "origin", "main")
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert ".  verify:add_mul-apply" in res.out  # re-verified on the new base first
    assert git(project.live, "rev-parse", "HEAD^") == other
    assert "def mul" in (project.live / "calc" / "ops.py").read_text()


def test_live_changed_in_a_patched_file_fails_by_default(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project)
    commit_in(project.live, "calc/ops.py", (project.live / "calc/ops.py").read_text() + "# x\n")
    git(project.live, "push", "-q", "origin", "main")
    before = project.state()
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "PROMOTE"
    assert "live changed since the workspace base in calc/ops.py" in res.summary["REASON"]
    assert "live_changed=rebase" in res.summary["REASON"]
    assert "docs/live-changed.md" in res.summary["REASON"]
    assert project.state() == before


def test_live_changed_rebase_runs_the_patch_again_on_live(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project)
    ops = (project.live / "calc/ops.py").read_text()
    commit_in(project.live, "calc/ops.py", "# live's header\n" + ops)
    git(project.live, "push", "-q", "origin", "main")
    res = project.run("promote", "issue=add_mul", "live_changed=rebase")
    assert res.code == 0, res.out
    text = (project.live / "calc/ops.py").read_text()
    assert text.startswith("# live's header\n") and "def mul" in text


def test_live_changed_overwrite_live_never_reverts_what_landed(
    remote_project: tuple[Project, Path],
) -> None:
    """Issue 11 item 8: carrying the verified file over live's rewrite would undo a landed
    commit; it is refused, live byte-identical (tests/test_live_changed.py has the merge)."""
    project, _ = remote_project
    verified(project)
    commit_in(project.live, "calc/ops.py", "# live rewrote it\n")
    git(project.live, "push", "-q", "origin", "main")
    before = project.state()
    res = project.run("promote", "issue=add_mul", "live_changed=overwrite_live")
    assert res.code != 0
    assert res.summary["STAGE"] == "APPLY"
    assert "live_changed=overwrite_live: live changed calc/ops.py" in res.summary["REASON"]
    assert "live work" in res.summary["REASON"]  # the landed commit, named
    assert "docs/live-changed.md" in res.summary["REASON"]
    assert project.state() == before


def test_live_changed_overwrite_workspace_keeps_lives_version(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project, "two", README_TOO)
    commit_in(project.live, "README.txt", "live's readme\n")
    git(project.live, "push", "-q", "origin", "main")
    res = project.run(
        "promote", "issue=two", "live_changed=overwrite_workspace", "allow_untouched=1"
    )
    assert res.code == 0, res.out
    assert (project.live / "README.txt").read_text() == "live's readme\n"
    assert "def mul" in (project.live / "calc/ops.py").read_text()
    assert res.summary["FILES"] == "calc/ops.py"


# --- origin ahead -----------------------------------------------------------------------------


def remote_commit(project: Project, bare: Path, name: str, text: str) -> str:
    clone = project.path / "elsewhere"
    if not clone.exists():
        git(project.path, "clone", "-q", "-c", "gc.auto=0", str(bare), str(clone))
    git(clone, "pull", "-q", "origin", "main")
    sha = commit_in(clone, name, text, "from elsewhere")
    git(clone, "push", "-q", "origin", "main")
    return sha


def test_origin_ahead_is_fast_forwarded_then_reverified(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    verified(project)
    theirs = remote_commit(project, bare, "CHANGES.txt", "from elsewhere\n")
    (project.live / "scratch.txt").write_text("mine\n")  # unrelated local work stays
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert "fast-forwarded 1 commit(s)" in res.out
    assert ".  verify:add_mul-apply" in res.out
    assert git(project.live, "rev-parse", "HEAD^") == theirs
    assert git(bare, "rev-parse", "main") == head(project.live)
    assert (project.live / "scratch.txt").read_text() == "mine\n"


def test_origin_diverged_fails_unless_skip_up_to_date(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    verified(project)
    remote_commit(project, bare, "CHANGES.txt", "from elsewhere\n")
    commit_in(project.live, "LOCAL.txt", "local only\n")
    before = project.state()
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "PREFLIGHT"
    assert "have diverged" in res.summary["REASON"]
    assert "skip_up_to_date=1" in res.summary["REASON"]
    assert project.state() == before
    forced = project.run("promote", "issue=add_mul", "skip_up_to_date=1")
    assert forced.code == 0, forced.out
    assert forced.summary["PUSH"] == "FAIL"  # non-fast-forward: reported, not fatal
    assert "push by hand" in forced.summary["NOTE"]


def test_behind_without_fast_forward_fails(remote_project: tuple[Project, Path]) -> None:
    project, bare = remote_project
    verified(project)
    remote_commit(project, bare, "CHANGES.txt", "from elsewhere\n")
    res = project.run("promote", "issue=add_mul", "fast_forward=0")
    assert res.code != 0
    assert res.summary["STAGE"] == "PREFLIGHT"
    assert "1 commit(s) ahead of live" in res.summary["REASON"]


def test_unreachable_remote_fails_clearly(make_project: ProjectFactory) -> None:
    project = make_project()
    git(project.live, "remote", "add", "origin", str(project.path / "nowhere.git"))
    verified(project)
    before = project.state()
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "PREFLIGHT"
    assert res.summary["REASON"].startswith("cannot fetch origin")
    assert "Traceback" not in res.out
    assert project.state() == before


def test_no_remote_lands_and_skips_the_push(project: Project) -> None:
    verified(project)
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert res.summary["PUSH"] == "SKIPPED"
    project.configure(remote=None)
    verified(project, "two", README_TOO.replace("calc/ops.py", "calc/__init__.py"))
    res = project.run("promote", "issue=two", "keep=1")
    assert res.code == 0, res.out
    assert res.summary["PUSH"] == "SKIPPED"
    assert (project.ws("two") / "repo" / "calc" / "__init__.py").exists()  # keep=1


# --- push failures and secrets ----------------------------------------------------------------


def test_require_push_fails_keeps_the_commit_and_a_rerun_finishes(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    verified(project)
    moved = bare.with_name("moved.git")
    bare.rename(moved)
    res = project.run("promote", "issue=add_mul", "require_push=1", "skip_up_to_date=1")
    assert res.code != 0
    assert res.summary["STAGE"] == "PUSH"
    sha = head(project.live)
    assert "stays in live" in res.summary["REASON"]
    assert f"git -C {project.live} push origin {sha[:12]}:refs/heads/main" in res.summary["REASON"]
    assert (
        git(project.live, "log", "-1", "--format=%(trailers:key=Patchgate-Issue,valueonly)").strip()
        == "add_mul"
    )
    assert events(project, "promote_fail")[0]["stage"] == "PUSH"
    moved.rename(bare)
    again = project.run("promote", "issue=add_mul", "require_push=1")
    assert again.code == 0, again.out
    assert again.summary["COMMIT"] == sha and again.summary["PUSH"] == "OK"
    assert git(bare, "rev-parse", "main") == sha
    assert ".  verify:" not in again.out  # nothing re-verified: it resumed at the push


def test_tokens_never_reach_the_logs_or_the_output(make_project: ProjectFactory) -> None:
    project = make_project()
    url_token, env_token = "urlsecret-91a7c3", "envsecret-5d2b84"
    git(
        project.live,
        "remote",
        "add",
        "origin",
        f"https://patchgate:{url_token}@127.0.0.1:9/live.git",
    )
    verified(project)
    fetch = project.run("promote", "issue=add_mul", env={"GITHUB_TOKEN": env_token})
    assert fetch.code != 0 and fetch.summary["STAGE"] == "PREFLIGHT"
    assert "https://***@127.0.0.1:9/live.git" in fetch.summary["REASON"]
    git(project.live, "remote", "set-url", "origin", "http://127.0.0.1:9/live.git")
    pushed = project.run(
        "promote", "issue=add_mul", "skip_up_to_date=1", env={"PATCHGATE_PUSH_TOKEN": env_token}
    )
    assert pushed.code == 0, pushed.out
    assert pushed.summary["PUSH"] == "FAIL"
    for res in (fetch, pushed):
        assert url_token not in res.out and env_token not in res.out
    everything = logs(project) + (project.path / "audit" / "provenance.jsonl").read_text()
    everything += "".join(
        p.read_text() for p in (project.path / "patches" / ".state").rglob("*.json")
    )
    assert url_token not in everything and env_token not in everything
    assert "***@127.0.0.1" in everything


def test_redact_hides_userinfo_and_env_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_abcdef123456")
    text = "fatal: https://me:s3cr3t@host/x.git and ghp_abcdef123456 and ssh://git@host/y"
    assert redact.redact(text) == "fatal: https://***@host/x.git and *** and ssh://***@host/y"


# --- what is never promoted -------------------------------------------------------------------


def test_failed_verification_is_never_promoted(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(project)
    project.patch(
        "add_mul.py",
        script(
            ["calc/ops.py"],
            'Path("NEW.txt").write_text("x")\nPath("calc/ops.py").write_text("X = 1\\n")',
        ),
    )
    before = project.state()
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "SCOPE"  # verify's failure: promote never ran
    assert ".  promote:" not in res.out
    assert project.state() == before
    assert not events(project, "apply")


def test_stale_verification_is_refused(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(project)
    commit_in(project.live, "NEWS.txt", "moved after planning\n")
    cfg = config.load(str(project.path), {})
    state = promote.state_dir(str(project.path), "add_mul")
    ctx = landing.context(cfg, "promote", "add_mul", "main", state, "doit promote issue=add_mul")
    with pytest.raises(promote.PatchgateError) as err:
        promote.preflight(str(project.ws("add_mul")), ctx, str(project.path / "t.log"))
    assert err.value.stage == "PROMOTE" and "is stale" in err.value.message
    assert "run doit promote issue=add_mul again" in err.value.message


def test_promote_needs_an_issue_with_a_workspace(project: Project) -> None:
    res = project.run("promote")
    assert res.code != 0 and "promote needs issue=ID" in res.summary["REASON"]
    res = project.run("promote", "issue=nothing")
    assert res.code != 0 and "no workspace for issue nothing" in res.summary["REASON"]


# --- one promotion at a time ------------------------------------------------------------------


def test_second_promote_fails_fast_naming_the_holder_then_lands_after_reverify(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    project.configure(audit_command=["sleep", "3"])  # keeps the first promotion running
    verified(project)
    verified(project, "readme", script(["README.txt"], 'Path("README.txt").write_text("r\\n")'))
    first = subprocess.Popen(
        doit_argv(project.path, "promote", "issue=add_mul"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock_file = project.path / "patches" / ".state" / "promote.lock"
    deadline = time.monotonic() + 30
    while not (lock_file.exists() and f'"pid": {first.pid}' in lock_file.read_text()):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    started = time.monotonic()
    second = project.run("promote", "issue=readme")
    assert time.monotonic() - started < 15  # failed fast, did not wait
    assert second.code != 0
    assert second.summary["STAGE"] == "PREFLIGHT"
    assert f"pid {first.pid}" in second.summary["REASON"]
    assert "issue add_mul" in second.summary["REASON"]
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 0, out
    landed_first = head(project.live)
    rerun = project.run("promote", "issue=readme")
    assert rerun.code == 0, rerun.out
    assert ".  verify:readme-apply" in rerun.out  # re-verified on the new base
    assert git(project.live, "rev-parse", "HEAD^") == landed_first
    assert (project.live / "README.txt").read_text() == "r\n"


def test_lock_left_by_a_killed_process_does_not_block(
    remote_project: tuple[Project, Path],
) -> None:
    project, _ = remote_project
    verified(project)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[2]); "
            "from patchgate import lock; lock.acquire(sys.argv[1], 'ghost', 'test'); "
            "print('held', flush=True); time.sleep(60)",
            str(project.path),
            str(DODO.parent),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    busy = project.run("promote", "issue=add_mul")
    assert busy.code != 0 and "issue ghost" in busy.summary["REASON"]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out


# --- crashes ----------------------------------------------------------------------------------


def test_kill_between_copy_and_commit_leaves_live_recoverable(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    verified(project, "two", README_TOO)
    before = project.state()
    killed = project.run("promote", "issue=two", env={"PATCHGATE_FAULT": "promote-copied"})
    assert killed.code == -signal.SIGKILL
    assert head(project.live) == before[0]
    written = json.loads((project.path / journal.JOURNAL).read_text())
    assert written["phase"] == "copying" and written["issue"] == "two"
    assert [p["path"] for p in written["paths"]] == ["README.txt", "calc/ops.py"]
    # every file is whole: either before or after, never half-written
    assert (project.live / "README.txt").read_text() in ("calc\n", "calc, with mul\n")
    assert not list(project.live.rglob("*.tmp"))
    notes = journal.recover(str(project.path))
    assert notes and "had not committed" in notes[0]
    assert project.state() == before  # entirely before
    assert not (project.path / journal.JOURNAL).exists()
    res = project.run("promote", "issue=two")
    assert res.code == 0, res.out
    assert git(bare, "rev-parse", "main") == head(project.live)


def test_next_promote_recovers_a_kill_before_commit(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(project)
    killed = project.run("promote", "issue=add_mul", env={"PATCHGATE_FAULT": "promote-copied"})
    assert killed.code == -signal.SIGKILL
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert "recovered: the interrupted promote of add_mul had not committed" in res.out
    assert git(project.live, "status", "--porcelain") == ""


def test_kill_between_commit_and_push_is_completed_by_the_next_promote(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    verified(project)
    base = head(project.live)
    killed = project.run("promote", "issue=add_mul", env={"PATCHGATE_FAULT": "promote-committed"})
    assert killed.code == -signal.SIGKILL
    sha = head(project.live)
    assert sha != base and git(bare, "rev-parse", "main") == base  # entirely after, not pushed
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert f"had committed {sha[:12]}" in res.out
    assert res.summary["COMMIT"] == sha and res.summary["PUSH"] == "OK"
    assert git(bare, "rev-parse", "main") == sha
    assert git(project.live, "status", "--porcelain") == ""
    assert len(events(project, "apply")) == 1


# --- live gates, links, audit -----------------------------------------------------------------

NO_LOCAL = {"name": "nolocal", "command": ["sh", "-c", "test ! -e LOCAL_ONLY"], "files": ["*"]}


def test_live_gate_failure_restores_live_exactly(make_project: ProjectFactory) -> None:
    project = make_project(gates=[NO_LOCAL], live_gates=["nolocal"])
    add_remote(project)
    verified(project, "two", README_TOO)
    (project.live / "LOCAL_ONLY").write_text("only in live\n")
    before = project.state()
    res = project.run("promote", "issue=two")
    assert res.code != 0
    assert res.summary["STAGE"] == "LIVE_GATES"
    assert "restored exactly" in res.summary["REASON"]
    assert project.state() == before
    assert events(project, "promote_fail")[0]["stage"] == "LIVE_GATES"
    (project.live / "LOCAL_ONLY").unlink()
    res = project.run("promote", "issue=two")
    assert res.code == 0, res.out
    assert "live gate nolocal: pass" in logs(project)


PYTEST = next(g for g in config.DEFAULT_GATES if g["name"] == "pytest")
# Only live has the operator's NOTES.txt: a patch's test uses it to behave in the workspace.
IN_LIVE = "os.path.exists('NOTES.txt')"


def new_test(name: str, body: str) -> str:
    """A patch adding tests/NAME.py with one test that runs ``body`` only in live."""
    text = f"import os\n\n\ndef {name}() -> None:\n    if not {IN_LIVE}:\n        return\n"
    text += textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
    return script([f"tests/{name}.py"], f"Path({f'tests/{name}.py'!r}).write_text({text!r})")


def operators_work(live: Path) -> None:
    """What an operator has in live besides HEAD: an untracked file and an unstaged edit."""
    (live / "NOTES.txt").write_text("operator's private notes\n")
    (live / "README.txt").write_text("calc\nwork in progress\n")


@pytest.mark.parametrize(
    "target",
    [
        f"calc/__pycache__/ops.{sys.implementation.cache_tag}.pyc",
        "NOTES.txt",
        "README.txt",
        "calc/__init__.py",
    ],
    ids=["ignored", "untracked", "modified", "tracked"],
)
def test_live_gate_cannot_write_live(make_project: ProjectFactory, target: str) -> None:
    project = make_project(gates=[PYTEST], live_gates=["pytest"])
    write = f"""
        os.makedirs(os.path.dirname({target!r}) or ".", exist_ok=True)
        with open({target!r}, "w") as fh:
            fh.write("written by the patch's test")
        """
    verified(project, "writer", new_test("test_write", write))
    operators_work(project.live)
    before = project.state()
    res = project.run("promote", "issue=writer")
    assert res.code != 0
    assert res.summary["STAGE"] == "LIVE_GATES"
    assert "Read-only file system" in res.summary["REASON"]
    assert project.state() == before  # ignored and untracked files included


@pytest.mark.parametrize(
    "target", ["calc/__pycache__/ops.pyc", "NOTES.txt", "README.txt"],
    ids=["ignored", "untracked", "modified"],
)  # fmt: skip
def test_unjailed_live_gate_writing_live_fails_the_promotion(
    make_project: ProjectFactory, target: str
) -> None:
    """jail: none cannot stop the write; the check after each live gate sees it all the same."""
    write = f"test ! -e NOTES.txt || {{ mkdir -p calc/__pycache__; echo planted > {target}; }}"
    planter = {"name": "planter", "command": ["sh", "-c", write], "files": ["*"]}
    project = make_project(gates=[planter], live_gates=["planter"], jail="none")
    verified(project)
    operators_work(project.live)
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "LIVE_GATES"
    assert f"live gate planter changed live ({target})" in res.summary["REASON"]
    assert git(project.live, "log", "--format=%s") == "first"


def test_live_gate_cache_is_outside_live_and_the_workspace(make_project: ProjectFactory) -> None:
    write = "test ! -e NOTES.txt || echo live > {cache}/mark"
    marker = {"name": "marker", "command": ["sh", "-c", write], "files": ["*"]}
    project = make_project(gates=[marker], live_gates=["marker"], keep=True)
    verified(project)
    operators_work(project.live)
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out
    assert "live gate marker: pass" in logs(project)  # it could write its {cache}
    assert not list(project.path.rglob("mark"))  # not in live, not in the kept workspace


def test_a_fixer_cannot_be_a_live_gate(make_project: ProjectFactory) -> None:
    fixer = next(g for g in config.DEFAULT_GATES if g["fixes"])
    project = make_project(gates=[fixer], live_gates=[fixer["name"]])
    verified(project)
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "PREFLIGHT"
    assert f"live gate {fixer['name']} is a fixer" in res.summary["REASON"]


@pytest.fixture
def project_is_live(tmp_path: Path) -> Project:
    """live_repo: "." (the default): the project folder, with patchgate's .gitignore, is live."""
    path = make_repo(
        tmp_path / "project", {**CALC, ".gitignore": (ROOT / ".gitignore").read_text()}
    )
    (path / "patches").mkdir(exist_ok=True)
    project = Project(path, path)
    project.configure(live_repo=".", gates=[PYTEST], live_gates=["pytest"], remote=None)
    return project


def test_live_gate_in_the_project_folder_sees_no_patchgate_state(project_is_live: Project) -> None:
    project = project_is_live
    verified(project)  # another issue's workspace, result.json and all
    other = project.ws("add_mul") / "result.json"
    result = other.read_bytes()
    spy = """
        seen = {d: sorted(os.listdir(d)) for d in ("patches", "audit")}
        wrote = []
        for d in seen:
            try:
                open(f"{d}/forged", "w").close()
                wrote.append(d)
            except OSError:
                pass
        raise AssertionError(f"SAW {seen} WROTE {wrote}")
        """
    verified(project, "spy", new_test("test_spy", spy))
    assert (project.path / "audit").is_dir()
    operators_work(project.live)
    res = project.run("promote", "issue=spy")
    assert res.summary["STAGE"] == "LIVE_GATES"
    assert "SAW {'patches': [], 'audit': []} WROTE []" in logs(project)
    assert other.read_bytes() == result
    assert not list(project.path.rglob("forged"))
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0, res.out


def test_parent_symlink_in_live_is_refused(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(
        project,
        "docs",
        script(["docs/new.txt"], 'Path("docs").mkdir()\nPath("docs/new.txt").write_text("doc\\n")'),
    )
    outside = project.path / "outside"
    outside.mkdir()
    (project.live / "docs").symlink_to(outside)
    res = project.run("promote", "issue=docs")
    assert res.code != 0
    assert "docs is a symbolic link in live" in res.summary["REASON"]
    assert list(outside.iterdir()) == []


def test_a_symlink_lands_as_a_symlink(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(project, "link", script(["link"], 'Path("link").symlink_to("README.txt")'))
    res = project.run("promote", "issue=link")
    assert res.code == 0, res.out
    assert os.readlink(project.live / "link") == "README.txt"
    assert git(project.live, "ls-tree", "HEAD", "link").startswith("120000")


def test_deletion_lands(remote_project: tuple[Project, Path]) -> None:
    project, _ = remote_project
    verified(project, "drop", script(["README.txt"], 'Path("README.txt").unlink()'))
    res = project.run("promote", "issue=drop")
    assert res.code == 0, res.out
    assert not (project.live / "README.txt").exists()
    assert git(project.live, "status", "--porcelain") == ""


def test_audit_failure_fails_the_run_and_keeps_the_commit(
    remote_project: tuple[Project, Path],
) -> None:
    project, bare = remote_project
    project.configure(audit_command=["sh", "-c", "echo audit found 2 problems; exit 3"])
    verified(project)
    res = project.run("promote", "issue=add_mul")
    assert res.code != 0
    assert res.summary["STAGE"] == "AUDIT"
    assert "exit 3: audit found 2 problems" in res.summary["REASON"]
    assert git(bare, "rev-parse", "main") == head(project.live)
    assert len(events(project, "apply")) == 1
    again = project.run("promote", "issue=add_mul")  # issue 11: a rerun audits again
    assert again.code != 0 and again.summary["STAGE"] == "AUDIT", again.out
    assert len(events(project, "apply")) == 1


def test_landing_creators_are_created_after_their_setup_tasks() -> None:
    """The fetch/fast-forward precedes verify's plan by doit's create_after, in any creator
    order (doit sorts creators by line number, across modules)."""
    from patchgate import finalize, rollback, verify

    for module, name in (
        (promote, "promote"),
        (finalize, "finalize"),
        (rollback, "rollback"),
        (verify, "verify"),
    ):
        creator = getattr(module, f"task_{name}")
        assert creator.doit_create_after.task_dep == f"_{name}"


def test_promote_applies_a_diff_with_the_strip_level_it_was_verified_with(
    project: Project,
) -> None:
    twin_files(project)  # the diff applies at -p0 (x/a.txt) and at -p1 (a.txt)
    assert project.run("verify", "patch=patches/twin.diff").summary["STAGE"] == "APPLY"
    assert project.run("verify", "patch=patches/twin.diff", "strip=1").code == 0
    res = project.run("promote", "issue=twin")
    assert res.code == 0, res.out
    assert "-- verify:twin-apply" in res.out  # not applied again, with strip inferred
    assert (project.live / "a.txt").read_text() == "changed\n"
    assert (project.live / "x" / "a.txt").read_text() == "same\n"

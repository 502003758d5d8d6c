"""Crash safety: a real command SIGKILLed at every step boundary and inside the long steps.

Each kill test runs a lifecycle command as users do, with ``PATCHGATE_FAULT`` naming one kill
point (tasks/faults.py lists them), and checks what a user relies on after a crash:

* live's branch moved atomically: HEAD is the old commit or the complete new one, and every
  file of the patch is whole, its old content or its new one;
* the very next command (status, verify or promote) finishes or undoes an interrupted
  landing before anything else and says so (``recover:``); after it live is entirely before
  or entirely after;
* the user's own uncommitted work outside the patch is untouched;
* ``audit/provenance.jsonl`` is a valid chain (a torn last line is accounted for by the next
  append);
* the same command run again completes the work; no lock is held, no stale worktree is
  listed and no temporary file of an atomic write is left.

The tests of one command family share one project (module scope) and put live back with git
between kills: each kill costs two or three doit runs, not a new project.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CALC, Project, Result, git, run_env, script, write_files
from doitcmd import doit_argv
from patchgate import journal, provenance, schema

# --- running patchgate as users do ------------------------------------------------------------


def doit(project: Project, *args: str, fault: str | None = None, timeout: float = 120) -> Result:
    """``doit ARGS`` in the project, bytecode cached, with the kill point ``fault`` armed."""
    env = run_env()
    env.pop("PATCHGATE_FAULT", None)
    if fault:
        env["PATCHGATE_FAULT"] = fault
    done = subprocess.run(
        doit_argv(project.path, *args),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout + done.stderr)


def new_project(path: Path, template: Path, **config: object) -> Project:
    live = path / "live"
    shutil.copytree(template, live, symlinks=True)
    (path / "patches").mkdir(parents=True)
    project = Project(path, live)
    project.configure(live_repo="live", **config)
    return project


def add_remote(project: Project) -> Path:
    bare = project.path / "remote.git"
    git(project.path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(bare, "config", "gc.auto", "0")
    git(project.live, "remote", "add", "origin", str(bare))
    git(project.live, "push", "-q", "origin", "main")
    return bare


# --- what must hold after any kill ------------------------------------------------------------

LEFTOVER = re.compile(r"(\.tmp$|\.\d+$|^promote-\d+\.index)")


def leftovers(project: Project) -> list[str]:
    """Temporary files of atomic writes anywhere patchgate writes (worktrees and .git aside)."""
    found = []
    for top in (project.path / "patches", project.path / "audit", project.live):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d not in (".git", "repo")]
            found += [os.path.join(dirpath, n) for n in filenames + dirnames if LEFTOVER.search(n)]
    index_lock = project.live / ".git" / "index.lock"
    return found + ([str(index_lock)] if index_lock.exists() else [])


def assert_no_debris(project: Project) -> None:
    """No temporary file, no held lock, no stale worktree, no journal."""
    assert leftovers(project) == []
    assert not (project.path / journal.JOURNAL).exists()
    lock_file = project.path / "patches" / ".state" / "promote.lock"
    if lock_file.exists():
        fd = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if someone still holds it
        finally:
            os.close(fd)
    listing = git(project.live, "worktree", "list", "--porcelain")
    assert "prunable" not in listing, listing
    for line in listing.splitlines():
        if line.startswith("worktree "):
            assert Path(line.removeprefix("worktree ")).is_dir(), listing


def assert_chain(project: Project, torn_allowed: bool = False) -> list[dict[str, object]]:
    report = provenance.verify_chain(str(project.path))
    assert report.ok, report.violations
    if not torn_allowed:
        assert report.pending_torn == []
    return [e for _, e in report.events]


def assert_clean_output(res: Result) -> None:
    assert "Traceback" not in res.out, res.out


# --- the patch: two files, so a kill can fall between them ------------------------------------

TWO_FILES = ["README.txt", "calc/ops.py"]
NEW_OPS = CALC["calc/ops.py"] + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
NEW_README = "calc, with mul\n"
TWO = script(
    TWO_FILES,
    f'Path("calc/ops.py").write_text({NEW_OPS!r})\nPath("README.txt").write_text({NEW_README!r})',
)
PRE = {"README.txt": CALC["README.txt"].encode(), "calc/ops.py": CALC["calc/ops.py"].encode()}
POST = {"README.txt": NEW_README.encode(), "calc/ops.py": NEW_OPS.encode()}
OTHER = script(["docs.txt"], 'Path("docs.txt").write_text("docs\\n")')
CHECK = {"name": "check", "command": ["sh", "-c", "test -f README.txt"], "files": ["*"]}
# The user's own uncommitted work in live, outside the patch: untracked, unstaged, staged.
USER_WORK = {
    "notes.txt": "my notes, never committed\n",
    "calc/__init__.py": '"""calc, being edited."""\n',
    "pyproject.toml": CALC["pyproject.toml"] + "# staged by the user\n",
}


def put_user_work(live: Path) -> None:
    write_files(live, USER_WORK)
    git(live, "add", "pyproject.toml")


def user_work(live: Path) -> tuple[dict[str, bytes], str]:
    files = {p: (live / p).read_bytes() for p in USER_WORK}
    status = git(live, "status", "--porcelain", "--", *USER_WORK)
    return files, status


def patch_files(live: Path) -> dict[str, bytes | None]:
    return {p: (live / p).read_bytes() if (live / p).exists() else None for p in TWO_FILES}


@dataclass
class Landing:
    """The promote family's project: live with a remote, issue ``two`` verified (keep=1)."""

    project: Project
    bare: Path
    base: str
    tree: str
    user: tuple[dict[str, bytes], str]

    @property
    def live(self) -> Path:
        return self.project.live

    def reset(self) -> None:
        """live, the remote and patchgate's state back to 'verified, not promoted'."""
        project, live = self.project, self.live
        (project.path / journal.JOURNAL).unlink(missing_ok=True)
        git(live, "reset", "-q", "--hard", self.base)
        git(live, "clean", "-q", "-fdx")
        git(self.bare, "update-ref", "refs/heads/main", self.base)
        git(live, "update-ref", "refs/remotes/origin/main", self.base)
        state = project.path / "patches" / ".state"
        for name in ("promote", "promoted"):
            shutil.rmtree(state / name, ignore_errors=True)
        shutil.rmtree(project.path / "patches" / "successful", ignore_errors=True)
        project.patch("two.py", TWO)
        put_user_work(live)
        self.user = user_work(live)
        ws = project.ws("two")
        if not (ws / "result.json").exists() or not (ws / "repo").is_dir():
            res = doit(project, "verify", "patch=patches/two.py")
            assert res.code == 0, res.out


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Landing:
    project = new_project(
        tmp_path_factory.mktemp("faults-promote") / "project", calc_template, gates=[CHECK]
    )
    # keep: the verified workspace serves every kill; reset() rewinds history under a log that
    # keeps its apply events, which the audit after a promotion (issue 11) would rightly flag.
    project.configure(keep=True, audit_after_promote=False)
    bare = add_remote(project)
    base = git(project.live, "rev-parse", "HEAD")
    project.patch("two.py", TWO)
    res = doit(project, "verify", "patch=patches/two.py")
    assert res.code == 0, res.out
    tree = json.loads((project.ws("two") / "result.json").read_text())["tree"]
    landing = Landing(project, bare, base, tree, ({}, ""))
    return landing


def assert_atomic(landing: Landing) -> bool:
    """HEAD is the old commit or the complete new one; every patched file is whole."""
    live = landing.live
    head = git(live, "rev-parse", "HEAD")
    landed = head != landing.base
    if landed:
        assert git(live, "rev-parse", "HEAD^") == landing.base
        assert git(live, "rev-parse", "HEAD^{tree}") == landing.tree  # all of the patch
    for path, data in patch_files(live).items():
        assert data in (PRE[path], POST[path]), f"{path} is half-written: {data!r}"
    assert user_work(live) == landing.user
    return landed


def assert_settled(landing: Landing) -> None:
    """Entirely before or entirely after: files, index and HEAD agree; no journal."""
    live = landing.live
    assert not (landing.project.path / journal.JOURNAL).exists()
    landed = assert_atomic(landing)
    assert patch_files(live) == (POST if landed else PRE)
    assert git(live, "status", "--porcelain", "--", *TWO_FILES) == ""
    assert not list(live.rglob("*.tmp"))


def assert_promoted(landing: Landing) -> None:
    project, live = landing.project, landing.live
    head = git(live, "rev-parse", "HEAD")
    assert git(live, "rev-parse", "HEAD^") == landing.base
    assert git(live, "rev-parse", "HEAD^{tree}") == landing.tree
    assert git(landing.bare, "rev-parse", "main") == head  # pushed
    assert patch_files(live) == POST
    assert git(live, "status", "--porcelain", "--", *TWO_FILES) == ""
    assert user_work(live) == landing.user
    events = assert_chain(project)
    applies = [e for e in events if e["event"] == "apply"]
    assert any(e["commit_hash"] == head for e in applies)
    commits = [e["commit_hash"] for e in applies]
    assert len(commits) == len(set(commits)), "a landing was recorded twice"
    record = json.loads((project.path / "patches/.state/promoted/two.json").read_text())
    assert record["commit"] == head
    filed = record["patch"]  # the patch, moved to successful/ once, whatever the kill
    assert filed and filed.startswith("patches/successful/"), record
    assert (project.path / filed).read_text() == TWO
    assert (
        zipfile.ZipFile(project.path / "patches/successful/two/patched_success.zip").testzip()
        is None
    )
    assert_no_debris(project)


# next command after the kill: any command recovers first (doit loads every creator, and
# verify's recovers), promote recovers and lands.
NEXT = {
    "status": ("status",),
    "history": ("history",),
    "config": ("config",),
    "verify": ("verify", "patch=patches/other.py"),
    "promote": ("promote", "issue=two"),
}

PROMOTE_KILLS = [
    # (kill point, the next command)
    ("step-before:promote:two-preflight", "promote"),
    ("json-tmp:preflight.json", "status"),
    ("json-tmp:promote-journal.json", "status"),
    ("promote-journaled", "status"),
    ("put-tmp:README.txt", "config"),
    ("promote-put:README.txt", "verify"),  # one file replaced, the other not yet
    ("promote-copied", "promote"),
    ("promote-commit-made", "status"),
    ("promote-ref-moved", "verify"),
    ("promote-committed", "history"),
    ("json-tmp:land.json", "promote"),
    ("step-before:promote:two-push", "promote"),
    ("json-tmp:push.json", "promote"),  # pushed, not recorded: the push runs again
    ("promote-archived", "promote"),
    ("promote-filed", "promote"),  # the patch moved, not recorded: the rerun finds it
    ("provenance-torn", "promote"),  # half the apply event on disk
    ("promote-recorded", "promote"),  # recorded, not finished: never recorded twice
    ("step-after:promote:two", "promote"),  # finished: the rerun says so
]


def start_doit(project: Project, *args: str) -> subprocess.Popen[str]:
    """A patchgate command in the background, in its own process group (for Ctrl-C)."""
    return subprocess.Popen(
        doit_argv(project.path, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env(),
        start_new_session=True,
    )


@pytest.mark.parametrize(("point", "after"), PROMOTE_KILLS, ids=[p for p, _ in PROMOTE_KILLS])
def test_kill_during_promote(landing: Landing, point: str, after: str) -> None:
    landing.reset()
    project = landing.project
    if after == "verify":
        project.patch("other.py", OTHER)
    # Its own subject: a commit made again in the same second by another test is not the same.
    message = f"message=kill at {point}"
    killed = doit(project, "promote", "issue=two", message, fault=point)
    assert killed.code == -signal.SIGKILL, killed.out
    assert_atomic(landing)
    assert_chain(project, torn_allowed=True)
    interrupted = (project.path / journal.JOURNAL).exists()
    nxt = doit(project, *NEXT[after], *([message] if after == "promote" else []))
    assert_clean_output(nxt)
    assert nxt.code == 0, nxt.out
    if interrupted:
        prefix = "promote: recovered:" if after == "promote" else "recover: recovered:"
        assert prefix in nxt.out, nxt.out
    assert_settled(landing)
    if after != "promote":
        rerun = doit(project, "promote", "issue=two", message)
        assert rerun.code == 0, rerun.out
    assert_promoted(landing)


def test_kill_while_removing_the_workspace_is_finished_by_the_rerun(landing: Landing) -> None:
    landing.reset()
    project = landing.project
    killed = doit(
        project,
        "promote",
        "issue=two",
        "keep=0",
        "message=removing",
        fault="promote-worktree-removed",
    )
    assert killed.code == -signal.SIGKILL
    assert not (project.ws("two") / "repo").exists() and project.ws("two").exists()
    rerun = doit(project, "promote", "issue=two", "keep=0", "message=removing")
    assert rerun.code == 0, rerun.out
    assert not project.ws("two").exists()
    assert_promoted(landing)


def test_kill_during_recovery_is_recovered_by_the_next_command(landing: Landing) -> None:
    landing.reset()
    project = landing.project
    killed = doit(project, "promote", "issue=two", "message=recovery", fault="promote-copied")
    assert killed.code == -signal.SIGKILL
    assert patch_files(landing.live) == POST  # copied, not committed
    again = doit(project, "status", fault="recover-undone")
    assert again.code == -signal.SIGKILL
    assert patch_files(landing.live) == PRE  # undone; the journal still says so
    assert (project.path / journal.JOURNAL).exists()
    nxt = doit(project, "status")
    assert nxt.code == 0 and "recover: recovered:" in nxt.out, nxt.out
    assert_settled(landing)
    rerun = doit(project, "promote", "issue=two", "message=recovery")
    assert rerun.code == 0, rerun.out
    assert_promoted(landing)


def test_a_stale_index_lock_in_live_fails_promote_clearly(landing: Landing) -> None:
    landing.reset()
    project = landing.project
    index_lock = landing.live / ".git" / "index.lock"
    index_lock.write_text("")
    try:
        before = project.state()
        res = doit(project, "promote", "issue=two")
        assert_clean_output(res)
        assert res.code != 0
        assert res.summary["STAGE"] == "PREFLIGHT"
        reason = res.summary["REASON"]
        assert str(index_lock) in reason and f"rm {index_lock}" in reason, reason
        assert project.state() == before  # live byte-identical, HEAD included
    finally:
        index_lock.unlink()
    res = doit(project, "promote", "issue=two", "message=index lock gone")
    assert res.code == 0, res.out
    assert_promoted(landing)


# --- verify -------------------------------------------------------------------------------------

VERIFY_KILLS = [
    "step-before:verify:two-workspace",
    "workspace-added",
    "step-after:verify:two-workspace",
    "apply-ran",
    "json-tmp:apply.json",
    "step-after:verify:two-scope",
    "gate-ran:check",
    "verify-result-written",
    "provenance-torn",  # half the verify_pass event on disk
    "zip-writing:patched.zip",
    "step-after:verify:two-archive",
]


@pytest.fixture(scope="module")
def verifying(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Project:
    project = new_project(
        tmp_path_factory.mktemp("faults-verify") / "project", calc_template, gates=[CHECK]
    )
    project.patch("two.py", TWO)
    put_user_work(project.live)
    return project


@pytest.mark.parametrize("point", VERIFY_KILLS)
def test_kill_during_verify(verifying: Project, point: str) -> None:
    project = verifying
    shutil.rmtree(project.path / "patches" / "workspaces", ignore_errors=True)
    shutil.rmtree(project.path / "patches" / ".state", ignore_errors=True)  # doit's state too
    git(project.live, "worktree", "prune")
    before = project.state()
    killed = doit(project, "verify", "patch=patches/two.py", fault=point)
    assert killed.code == -signal.SIGKILL, killed.out
    assert project.state() == before  # verify never touches live
    assert_chain(project, torn_allowed=True)
    rerun = doit(project, "verify", "patch=patches/two.py")
    assert_clean_output(rerun)
    assert rerun.code == 0, rerun.out
    assert rerun.summary["RESULT"] == "SUCCESS" and rerun.summary["FILES"] == ", ".join(TWO_FILES)
    ws = project.ws("two")
    result = json.loads((ws / "result.json").read_text())
    schema.validate(result, "verification-result.schema.json", "TEST", "result.json")
    assert result["verification_status"] == "pass"
    names = zipfile.ZipFile(ws / "patched.zip").namelist()
    assert "files/README.txt" in names and "result.json" in names
    assert "RESULT: SUCCESS" in (project.path / rerun.summary["LOG"]).read_text()
    events = assert_chain(project)
    passed = [e for e in events if e["event"] == "verify_pass"]
    assert passed and passed[-1]["patch_id"] == result["patch_id"]
    assert project.state() == before
    assert_no_debris(project)


# --- finalize -----------------------------------------------------------------------------------

FINALIZE_KILLS = [
    "step-before:finalize:land",
    "finalize-journaled",
    "finalize-commit-made",
    "finalize-ref-moved",
    "finalize-committed",
    "step-before:finalize:push",
]


@pytest.fixture(scope="module")
def finalizing(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Project:
    project = new_project(
        tmp_path_factory.mktemp("faults-finalize") / "project", calc_template, gates=[CHECK]
    )
    add_remote(project)
    return project


@pytest.mark.parametrize("point", FINALIZE_KILLS)
def test_kill_during_finalize(finalizing: Project, point: str) -> None:
    project, live = finalizing, finalizing.live
    base = git(live, "rev-list", "--max-parents=0", "HEAD")
    (project.path / journal.JOURNAL).unlink(missing_ok=True)
    git(live, "reset", "-q", "--hard", base)
    git(live, "clean", "-q", "-fdx")
    git(project.path / "remote.git", "update-ref", "refs/heads/main", base)
    git(live, "update-ref", "refs/remotes/origin/main", base)
    shutil.rmtree(project.path / "patches" / ".state" / "finalize", ignore_errors=True)
    write_files(live, {"README.txt": NEW_README, "notes.txt": "new file\n"})
    changed = {"README.txt": NEW_README.encode(), "notes.txt": b"new file\n"}
    killed = doit(project, "finalize", "message=finalize it", fault=point)
    assert killed.code == -signal.SIGKILL, killed.out
    head = git(live, "rev-parse", "HEAD")
    assert head == base or git(live, "rev-parse", "HEAD^") == base
    assert {p: (live / p).read_bytes() for p in changed} == changed  # the user's work, whole
    nxt = doit(project, "status")
    assert nxt.code == 0, nxt.out
    assert not (project.path / journal.JOURNAL).exists()
    rerun = doit(project, "finalize", "message=finalize it")
    assert_clean_output(rerun)
    assert rerun.code == 0, rerun.out
    head = git(live, "rev-parse", "HEAD")
    assert git(live, "rev-parse", "HEAD^") == base
    assert git(project.path / "remote.git", "rev-parse", "main") == head
    assert git(live, "status", "--porcelain") == ""
    assert {p: (live / p).read_bytes() for p in changed} == changed
    applies = [e for e in assert_chain(project) if e["event"] == "apply"]
    assert [e["commit_hash"] for e in applies].count(head) == 1
    assert_no_debris(project)


# --- disk full, read-only patches/ ------------------------------------------------------------


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[None]:
    """A small tmpfs on ``where`` (its content copied in); skip when mounting is not allowed."""
    saved = where.with_name(where.name + ".saved")
    where.rename(saved)
    where.mkdir()
    done = subprocess.run(
        ("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        saved.rename(where)
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        shutil.copytree(saved, where, symlinks=True, dirs_exist_ok=True)
        yield
    finally:
        subprocess.run(("umount", "-l", str(where)), check=False)
        shutil.rmtree(saved, ignore_errors=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(("mount", "-o", f"remount,{options}", str(where)), check=True)


BIG = script(
    ["blob.bin"],
    'import os\nPath("blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))',
)
LOUD = script(
    ["README.txt"],
    'Path("README.txt").write_text("loud\\n")\n'
    'import sys\nfor _ in range(6 * 1024):\n    sys.stdout.write("x" * 1023 + "\\n")',
)


def assert_clear_failure(res: Result, stage: str, words: str) -> None:
    assert_clean_output(res)
    assert res.code != 0, res.out
    assert res.summary.get("RESULT") == "FAIL", res.out
    assert res.summary.get("STAGE") == stage, res.out
    assert words in res.summary["REASON"], res.summary["REASON"]


def test_disk_full_while_writing_the_archive(tmp_path: Path, calc_template: Path) -> None:
    project = new_project(tmp_path / "project", calc_template, gates=[])
    patches = project.path / "patches"
    with mounted_tmpfs(patches, "5m"):
        project.patch("big.py", BIG)
        before = project.state()
        res = doit(project, "verify", "patch=patches/big.py")
        assert_clear_failure(res, "ARCHIVE", "No space left on device")
        assert "patched.zip" in res.summary["REASON"]
        assert "free some space" in res.summary["REASON"]
        assert project.state() == before
        assert leftovers(project) == []  # the half zip is gone
        assert_chain(project)
        remount(patches, "size=16m")
        res = doit(project, "verify", "patch=patches/big.py")
        assert res.code == 0, res.out
        assert zipfile.ZipFile(project.ws("big") / "patched.zip").testzip() is None
        assert_no_debris(project)


def test_disk_full_while_writing_the_log(tmp_path: Path, calc_template: Path) -> None:
    project = new_project(tmp_path / "project", calc_template, gates=[])
    patches = project.path / "patches"
    with mounted_tmpfs(patches, "4m"):
        project.patch("loud.py", LOUD)
        before = project.state()
        res = doit(project, "verify", "patch=patches/loud.py")
        assert_clear_failure(res, "APPLY", "No space left on device")
        assert "patches/logs/" in res.summary["REASON"]
        assert project.state() == before
        log = project.path / res.summary["LOG"].split(" ")[0]
        assert log.read_text().endswith("\n")  # no half entry: the failed append was taken back
        assert leftovers(project) == []
        remount(patches, "size=32m")
        res = doit(project, "verify", "patch=patches/loud.py")
        assert res.code == 0, res.out + workspace_story(project, "loud")
        assert_no_debris(project)


def workspace_story(project: Project, issue: str) -> str:
    """What a failed assertion needs to be understood: the worktree's state and the logs."""
    repo = project.ws(issue) / "repo"
    logs = sorted((project.path / "patches" / "logs").glob(f"*_issue_{issue}.log"))
    text = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    status = subprocess.run(
        ("git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"),
        capture_output=True,
        text=True,
        check=False,
    )
    files = (
        sorted(p.name for p in project.ws(issue).iterdir()) if project.ws(issue).exists() else []
    )
    return f"\nworkspace files: {files}\nworktree status: {status.stdout}{status.stderr}{text}"


def test_read_only_patches_folder_is_refused_clearly(tmp_path: Path, calc_template: Path) -> None:
    project = new_project(tmp_path / "project", calc_template, gates=[])
    project.patch("two.py", TWO)
    assert doit(project, "verify", "patch=patches/two.py").code == 0
    patches = str(project.path / "patches")
    bind = subprocess.run(("mount", "--bind", patches, patches), capture_output=True, check=False)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({bind.stderr.decode().strip()}); needs root")
    try:
        remount(Path(patches), "ro,bind")
        before = project.state()
        for args in (("verify", "patch=patches/two.py"), ("promote", "issue=two")):
            res = doit(project, *args)
            assert_clear_failure(res, "PREFLIGHT", "patches/ cannot be written")
            assert "make it writable" in res.summary["REASON"]
        shown = doit(project, "status")  # looking needs no writing
        assert_clean_output(shown)
        assert shown.code == 0 and "two" in shown.out, shown.out
        assert "(not written: Read-only file system)" in shown.summary["LOG"]
        assert project.state() == before
    finally:
        subprocess.run(("umount", patches), check=False)
    res = doit(project, "promote", "issue=two")
    assert res.code == 0, res.out


# --- Ctrl-C -------------------------------------------------------------------------------------


def processes_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def test_ctrl_c_during_a_gate_stops_the_run_and_its_processes(
    tmp_path: Path, calc_template: Path
) -> None:
    token = f"pg-ctrl-c-{os.getpid()}-{time.monotonic_ns()}"
    slow = {
        "name": "slow",
        "command": ["{python}", "-c", "import time, sys; time.sleep(60)", token],
        "files": ["*"],
    }
    project = new_project(tmp_path / "project", calc_template, gates=[slow])
    project.patch("two.py", TWO)
    before = project.state()
    run = start_doit(project, "verify", "patch=patches/two.py")
    try:
        deadline = time.monotonic() + 60
        while not processes_with(token):
            assert run.poll() is None and time.monotonic() < deadline, "the gate never started"
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        out, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    res = Result(run.returncode, out)
    assert res.code == 130, out
    assert_clear_failure(res, "GATES", "interrupted during verify:two-gate-slow")
    deadline = time.monotonic() + 10
    while processes_with(token):
        assert time.monotonic() < deadline, "the gate outlived Ctrl-C"
        time.sleep(0.05)
    assert project.state() == before
    project.configure(gates=[CHECK])
    again = doit(project, "verify", "patch=patches/two.py")
    assert again.code == 0, again.out
    assert_chain(project)
    assert_no_debris(project)


# --- rollback: its landing is promote's --------------------------------------------------------


@dataclass
class Reverting:
    """The rollback family's project: commit ``sha`` (the patch TWO) promoted, to roll back."""

    project: Project
    bare: Path
    sha: str
    user: tuple[dict[str, bytes], str]

    @property
    def issue(self) -> str:
        return f"rollback-{self.sha[:12]}"

    def reset(self) -> str:
        """live at the promoted commit again, no rollback state; returns the plan's token."""
        project, live = self.project, self.project.live
        (project.path / journal.JOURNAL).unlink(missing_ok=True)
        git(live, "reset", "-q", "--hard", self.sha)
        git(live, "clean", "-q", "-fdx")
        git(self.bare, "update-ref", "refs/heads/main", self.sha)
        git(live, "update-ref", "refs/remotes/origin/main", self.sha)
        shutil.rmtree(project.path / "patches" / ".state" / "rollback", ignore_errors=True)
        put_user_work(live)
        self.user = user_work(live)
        planned = doit(project, "rollback", f"sha={self.sha}")
        assert planned.code == 0, planned.out
        found = re.search(r"confirm=([0-9a-f]{12}) ", planned.summary["CONFIRM"])
        assert found, planned.out
        return found.group(1)


@pytest.fixture(scope="module")
def reverting(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Reverting:
    project = new_project(
        tmp_path_factory.mktemp("faults-rollback") / "project", calc_template, gates=[]
    )
    bare = add_remote(project)
    project.patch("two.py", TWO)
    assert doit(project, "verify", "patch=patches/two.py").code == 0
    landed = doit(project, "promote", "issue=two", "message=calc: multiply")
    assert landed.code == 0, landed.out
    return Reverting(project, bare, landed.summary["COMMIT"], ({}, ""))


ROLLBACK_KILLS = [
    "step-before:rollback:{issue}-land",
    "rollback-journaled",
    "rollback-put:README.txt",  # one file reverted, the other not yet
    "rollback-copied",
    "rollback-commit-made",
    "rollback-ref-moved",
    "step-before:rollback:{issue}-push",
    "step-before:rollback:{issue}-finish",
    "rollback-recorded",  # the event appended, nothing after it: never recorded twice
    "rollback-done",  # the done record written, its state and workspace not yet removed
]


@pytest.mark.parametrize("point", ROLLBACK_KILLS)
def test_kill_during_rollback(reverting: Reverting, point: str) -> None:
    token = reverting.reset()
    project, live, sha = reverting.project, reverting.project.live, reverting.sha
    confirm = ("rollback", f"sha={sha}", f"confirm={token}", "operator=op", "reason=kill test")
    killed = doit(project, *confirm, fault=point.format(issue=reverting.issue))
    assert killed.code == -signal.SIGKILL, killed.out
    head = git(live, "rev-parse", "HEAD")
    if head != sha:  # the complete revert, nothing less
        assert git(live, "rev-parse", "HEAD^") == sha
        assert git(live, "rev-parse", "HEAD^{tree}") == git(live, "rev-parse", f"{sha}^^{{tree}}")
    for path, data in patch_files(live).items():
        assert data in (PRE[path], POST[path]), f"{path} is half-written: {data!r}"
    assert user_work(live) == reverting.user
    assert_chain(project, torn_allowed=True)
    interrupted = (project.path / journal.JOURNAL).exists()
    nxt = doit(project, "status")
    assert nxt.code == 0, nxt.out
    assert ("recover: recovered:" in nxt.out) == interrupted, nxt.out
    assert not (project.path / journal.JOURNAL).exists()
    reverted = git(live, "rev-parse", "HEAD") != sha
    assert patch_files(live) == (PRE if reverted else POST)
    assert git(live, "status", "--porcelain", "--", *TWO_FILES) == ""
    rerun = doit(project, *confirm)
    assert_clean_output(rerun)
    assert rerun.code == 0, rerun.out
    revert = git(live, "rev-parse", "HEAD")
    assert git(live, "rev-parse", "HEAD^") == sha and patch_files(live) == PRE
    assert git(reverting.bare, "rev-parse", "main") == revert
    assert user_work(live) == reverting.user
    events = assert_chain(project)
    rollbacks = [e for e in events if e["event"] == "rollback" and e["revert_commit"] == revert]
    assert len(rollbacks) == 1
    assert_no_debris(project)


def test_ctrl_c_during_a_live_gate_undoes_the_landing(tmp_path: Path, calc_template: Path) -> None:
    token = f"pg-live-gate-{os.getpid()}-{time.monotonic_ns()}"
    # Slow only in live (where the user keeps an untracked LIVE_MARK): quick in the workspace.
    wait = "import os, time; time.sleep(60 if os.path.exists('LIVE_MARK') else 0)"
    slow = {"name": "slow", "command": ["{python}", "-c", wait, token], "files": ["*"]}
    project = new_project(tmp_path / "project", calc_template, gates=[slow], live_gates=["slow"])
    project.patch("two.py", TWO)
    assert doit(project, "verify", "patch=patches/two.py").code == 0
    put_user_work(project.live)
    (project.live / "LIVE_MARK").write_text("")
    before = project.state()
    run = start_doit(project, "promote", "issue=two")
    try:
        deadline = time.monotonic() + 60
        while not processes_with(token) or "live gate slow:" not in "".join(
            p.read_text() for p in (project.path / "patches" / "logs").glob("*_issue_two.log")
        ):
            assert run.poll() is None and time.monotonic() < deadline, "no live gate started"
            time.sleep(0.05)
        assert patch_files(project.live) == POST  # copied, gated, not committed yet
        os.killpg(run.pid, signal.SIGINT)
        out, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    res = Result(run.returncode, out)
    assert res.code == 130, out
    assert_clear_failure(res, "PROMOTE", "interrupted during promote:two-land")
    assert project.state() == before  # the landing was undone on the spot
    assert not processes_with(token)
    assert_no_debris(project)

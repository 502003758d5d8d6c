"""Issue 11, item 9: the small gaps (docs/small-gaps.md), each as a user observes it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import ADD_MUL, CALC, Project, git, make_repo, script
from patchgate import audit_history, audit_report, config, filing, promote, report
from patchgate.errors import PatchgateError
from patchgate.workspace import Meta, Workspace
from test_audit import land

FAILING = script(["calc/ops.py"], 'raise SystemExit("the patch gave up")')


def latest_log(project: Project) -> str:
    return (project.path / "patches" / "latest.log").read_text()


# --- message= kept from verify to promote -----------------------------------------------------


def test_verify_message_is_kept_and_used_by_promote(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    res = project.run("verify", f"patch={patch}", "message=calc: add mul")
    assert res.code == 0, res.out
    meta = json.loads((project.ws("add_mul") / "meta.json").read_text())
    assert meta["message"] == "calc: add mul"
    landed = project.run("promote", "issue=add_mul")
    assert landed.code == 0, landed.out
    assert "-- verify:add_mul-apply" in landed.out  # kept without verifying again
    assert git(project.live, "log", "-1", "--format=%s") == "calc: add mul"


class Ctx(dict[str, Any]):
    """The landing context as a mapping and as attributes (what commit_message reads)."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def test_promote_message_wins_over_the_kept_one(tmp_path: Path) -> None:
    ws = Workspace(str(tmp_path), "x")
    os.makedirs(ws.dir)
    meta = Meta("x", "/live", "0" * 40, "1" * 40, 1, "p.py", "2" * 64, "now", "from verify")
    Path(ws.meta).write_text(json.dumps(meta.to_json()))
    pre = {"patch_id": "x@1", "head": "0" * 40, "verification": "pass", "gates": {}}
    ctx = Ctx(
        issue="x",
        message=None,
        commit_message="patchgate: {issue}",
        operator=None,
        co_authored_by=None,
    )
    pre["files"], pre["tree"] = ["a.py"], "1" * 40
    assert promote.commit_message(ws, ctx, pre).splitlines()[0] == "from verify"
    ctx = Ctx(ctx, message="from promote")
    assert promote.commit_message(ws, ctx, pre).splitlines()[0] == "from promote"


# --- the run log starts with the configuration ------------------------------------------------


def test_every_run_log_starts_with_the_effective_configuration(project: Project) -> None:
    res = project.run("verify", f"patch={project.patch('add_mul.py', ADD_MUL)}", "keep_going=1")
    assert res.code == 0, res.out
    lines = latest_log(project).splitlines()
    assert lines[0] == "# effective configuration of this run (doit config; secrets redacted)"
    assert any(ln.startswith("keep_going") and "(command line)" in ln for ln in lines[:60])
    assert any(ln.startswith("live_repo") and '"live"' in ln for ln in lines[:60])


def test_the_log_header_redacts_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOME_API_TOKEN", "tok-3f9a1c77")
    cfg = config.load(str(tmp_path), {})
    values = dict(cfg.values)
    values["operator"] = "uses tok-3f9a1c77"
    values["remote"] = "https://bob:hunter22@example.invalid/x.git"
    values["gates"] = [{"name": "g", "env": {"API_KEY": "sk-live-123456"}, "command": ["x"]}]
    # Given gates (not detected ones) are shown as they are, env and all.
    sources = {**cfg.sources, "gates": config.CONFIG_FILE}
    text = config.log_header(config.Config(cfg.root, values, sources))
    for secret in ("tok-3f9a1c77", "hunter22", "sk-live-123456"):
        assert secret not in text
    assert "https://***@example.invalid/x.git" in text and '"API_KEY": "***"' in text


def test_header_is_written_once_at_the_top(tmp_path: Path) -> None:
    root = str(tmp_path)
    report.set_header(root, "# header")
    path = report.log_path(root, "x")
    report.log(path, "first")
    report.log(path, "second")
    assert Path(path).read_text() == "# header\nfirst\nsecond\n"


# --- filing, and latest=1 ----------------------------------------------------------------------


def test_failed_verification_is_filed_in_unsuccessful(project: Project) -> None:
    patch = project.patch("gives_up.py", FAILING)
    res = project.run("verify", f"patch={patch}")
    assert res.code != 0 and res.summary["STAGE"] == "APPLY"
    filed = project.path / "patches" / "unsuccessful" / "gives_up.py"
    assert filed.read_text() == FAILING
    assert (project.path / patch).exists()  # a copy: the patch stays in the inbox


def test_patch_refused_before_its_workspace_is_filed_too(project: Project) -> None:
    patch = project.patch("no_files.py", "print('no FILES here')\n")
    res = project.run("verify", f"patch={patch}")
    assert res.code != 0 and "declares no FILES" in res.summary["REASON"]
    assert (project.path / "patches" / "unsuccessful" / "no_files.py").exists()


def test_verify_latest_runs_the_newest_patch(project: Project) -> None:
    old = project.path / project.patch("older.py", FAILING)
    new = project.path / project.patch("newer.py", ADD_MUL)
    os.utime(old, (2_000_000_000, 2_000_000_000))  # newer by mtime than newer.py
    os.utime(new, (1_000_000_000, 1_000_000_000))
    res = project.run("verify", "latest=1")
    assert res.code != 0 and "the patch gave up" in res.summary["REASON"]
    assert project.ws("older").exists() and not project.ws("newer").exists()


def test_newest_patch_looks_only_at_patches_directly_in_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "patches"
    (inbox / "successful").mkdir(parents=True)
    (inbox / "successful" / "old.py").write_text("x")
    (inbox / "notes.txt").write_text("x")
    with pytest.raises(PatchgateError, match="latest=1 found no patch"):
        filing.newest_patch(str(tmp_path))
    (inbox / "a.diff").write_text("x")
    assert filing.newest_patch(str(tmp_path)) == str(inbox / "a.diff")
    with pytest.raises(PatchgateError, match="latest=maybe is not a yes/no value"):
        filing.wants_latest("maybe")


# --- the audit after a promotion; promote patch=P ---------------------------------------------


def test_promote_patch_takes_the_issue_from_the_stem_and_audits(project: Project) -> None:
    res = project.run("promote", f"patch={project.patch('add_mul.py', ADD_MUL)}")
    assert res.code == 0, res.out
    assert (project.path / "patches" / ".state" / "promoted" / "add_mul.json").exists()
    report_file = project.path / "audit" / "results" / "audit.json"
    assert json.loads(report_file.read_text())["verdict"] == "pass"  # audited in-process
    assert (project.path / "patches" / "successful" / "add_mul.py").exists()


def test_audit_failure_after_promote_is_not_success_on_a_rerun(project: Project) -> None:
    land(project, "ghost", "calc/ghost.py", record=False)  # a patchgate commit with no event
    patch = project.patch("add_mul.py", ADD_MUL)
    res = project.run("promote", f"patch={patch}")
    assert res.code != 0 and res.summary["STAGE"] == "AUDIT"
    assert "the audit after the promotion failed" in res.summary["REASON"]
    assert "def mul" in (project.live / "calc/ops.py").read_text()  # the commit stays
    again = project.run("promote", "issue=add_mul")
    assert again.code != 0 and again.summary["STAGE"] == "AUDIT", again.out
    off = project.run("promote", "issue=add_mul", "audit_after_promote=0")
    assert off.code == 0, off.out
    assert "the audit after it passes now" in off.summary["NOTE"]


# --- a corrupt diff ----------------------------------------------------------------------------

TRUNCATED = (
    "--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,4 +1,4 @@\n"
    ' """Arithmetic."""\n-\n'  # the hunk promises 4 lines and stops after 2
)


@pytest.mark.parametrize("strip", [None, "1"])
def test_corrupt_diff_gets_corrupt_advice(project: Project, strip: str | None) -> None:
    patch = project.patch("broken.diff", TRUNCATED)
    res = project.run("verify", f"patch={patch}", *([f"strip={strip}"] if strip else []))
    assert res.code != 0 and res.summary["STAGE"] == "APPLY"
    reason = res.summary["REASON"]
    assert "is not a valid unified diff (error: corrupt patch at line" in reason
    assert "corrupt, not stale" in reason and "current live HEAD" not in reason


# --- doit history: when each commit landed, aligned ---------------------------------------------


def test_history_rows_carry_the_landing_time_and_align(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", CALC)
    sha = git(repo, "rev-parse", "HEAD")
    stamp = int(git(repo, "log", "-1", "--format=%ct"))
    times = audit_history.landing_times(str(repo), [sha])
    assert times[sha] == audit_history.datetime.fromtimestamp(stamp, audit_history.UTC).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    rows: list[dict[str, Any]] = [
        {"commit": sha, "landed": times[sha], "patch_id": "a-much-longer-patch@1", "rollback_id":
         None, "reverts": None, "verdict": "pass", "operator": None, "files": ["x.py"],
         "rolled_back_by": None},
        {"commit": "f" * 40, "landed": times[sha], "patch_id": None, "rollback_id": "rb-1",
         "reverts": sha, "verdict": None, "operator": "alice", "files": [],
         "rolled_back_by": None},
    ]  # fmt: skip
    lines = audit_report.format_history(rows)
    assert lines[0].startswith("commit        landed (UTC)         patch")
    for column in ("patch", "operator", "verdict", "files"):
        at = lines[0].index(column)
        assert all(ln[at - 2 : at] == "  " and ln[at] != " " for ln in lines[1:]), column
    assert times[sha] in lines[1] and f"reverts {sha[:12]}" in lines[2]


def test_promote_patch_names_one_file(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "fix_login.py").write_text("FILES = []\n")
    assert filing.issue_of(str(tmp_path), "patches/fix_login.py") == "fix_login"
    assert filing.issue_of(str(tmp_path), "fix_login.py") == "fix_login"  # AM style: bare name
    for several in ("patches/*.py", "a.py,b.py"):
        with pytest.raises(PatchgateError, match="promote lands one: name one file"):
            filing.issue_of(str(tmp_path), several)

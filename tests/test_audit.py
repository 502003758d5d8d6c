"""doit audit, doit record, doit history: the provenance log against git history."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, git
from patchgate import audit, provenance
from patchgate import trailers as tr
from patchgate.errors import PatchgateError
from test_rollback import commit_in, confirm, plan

MISSING_SHA = "0123456789abcdef0123456789abcdef01234567"


# --- a history made the way promote and rollback make it -------------------------------------


def commit_message(repo: Path, message: str) -> str:
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "--cleanup=verbatim", "-F", "-"],
        input=message,
        text=True,
        check=True,
        capture_output=True,
    )
    return git(repo, "rev-parse", "HEAD")


def event(project: Project, fields: dict[str, Any]) -> dict[str, Any]:
    return provenance.append_event(str(project.path), fields)


def land(
    project: Project, patch_id: str, path: str, operator: str = "jsmith", record: bool = True
) -> str:
    """A patch commit with promote's trailers, and (``record``) its verify_pass and apply events."""
    target = project.live / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"{patch_id}\n")
    git(project.live, "add", path)
    message = tr.format_message(
        f"patchgate: {patch_id}",
        "Verified in its workspace.",
        [
            (tr.PATCH_ID, patch_id),
            (tr.VERIFICATION, tr.verification_value("pass", {"pytest": "pass"})),
            (tr.FILES, tr.files_value([path])),
            (tr.OPERATOR, operator),
        ],
    )
    sha = commit_message(project.live, message)
    if record:
        event(project, {"event": "verify_pass", "patch_id": patch_id, "affected_files": [path]})
        event(
            project,
            {
                "event": "apply",
                "patch_id": patch_id,
                "commit_hash": sha,
                "operator": operator,
                "files": [path],
            },
        )
    return sha


def revert(
    project: Project,
    sha: str,
    rollback_id: str,
    patch_id: str,
    reverted_in_event: str | None = None,
) -> str:
    """A rollback commit (git revert + rollback trailers) and its rollback event."""
    git(project.live, "revert", "--no-commit", sha)
    message = tr.format_message(
        f'Revert "patchgate: {patch_id}"',
        f"This reverts commit {sha}.",
        [
            (tr.ROLLBACK_ID, rollback_id),
            (tr.REVERTS, sha),
            (tr.REASON, "regression"),
            (tr.OPERATOR, "jsmith"),
        ],
    )
    revert_sha = commit_message(project.live, message)
    event(
        project,
        {
            "event": "rollback",
            "patch_id": patch_id,
            "rollback_id": rollback_id,
            "reason": "regression",
            "operator": "jsmith",
            "revert_commit": revert_sha,
            "reverted_commit": reverted_in_event or sha,
        },
    )
    return revert_sha


def log_lines(project: Project) -> list[bytes]:
    return (project.path / "audit" / "provenance.jsonl").read_bytes().splitlines(keepends=True)


def write_log(project: Project, lines: list[bytes]) -> None:
    (project.path / "audit" / "provenance.jsonl").write_bytes(b"".join(lines))


def results(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.path / "audit/results/audit.json").read_text())
    return data


def audit_fails(project: Project) -> str:
    res = project.run("audit")
    assert res.code != 0, res.out
    assert res.summary["RESULT"] == "FAIL" and res.summary["STAGE"] == "AUDIT"
    assert "Traceback" not in res.out
    return res.summary["REASON"]


def three_patches(project: Project) -> list[str]:
    return [land(project, f"p{i}", f"calc/p{i}.py") for i in range(3)]


# --- a clean audit and its report ------------------------------------------------------------


def test_audit_of_a_known_history_writes_its_report(project: Project) -> None:
    first = land(project, "fix_login@aaa", "calc/login.py", operator="alice")
    second = land(project, "add_mul@bbb", "calc/mul.py", operator="bob")
    undo = revert(project, first, "rb-1", "fix_login@aaa")
    event(
        project,
        {
            "event": "verify_fail",
            "patch_id": "broken@ccc",
            "stage": "GATES",
            "reason": "mypy failed",
            "affected_files": ["calc/ops.py"],
        },
    )
    event(project, {"event": "verify_pass", "patch_id": "late@ddd"})
    event(
        project,
        {
            "event": "promote_fail",
            "patch_id": "late@ddd",
            "stage": "PROMOTE",
            "reason": "live moved",
        },
    )

    res = project.run("audit")

    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS"
    assert res.summary["EVENTS"] == "8" and res.summary["COMMITS"] == "3"
    data = results(project)
    assert data["verdict"] == "pass" and data["violations"] == []
    assert data["history"] == {
        "commits": 3,
        "patch_commits": 2,
        "rollback_commits": 1,
        "walked": 3,
        "incremental": False,
        "previous_tip": None,
    }
    rows = {r["patch_id"]: r for r in data["patches"]}
    assert [r["patch_id"] for r in data["patches"]] == [
        "late@ddd",
        "broken@ccc",
        "fix_login@aaa",
        "add_mul@bbb",
    ]  # newest first
    assert rows["fix_login@aaa"] | {"line": 0} == {
        "patch_id": "fix_login@aaa",
        "verdict": "pass",
        "state": "rolled back",
        "commit": first,
        "operator": "alice",
        "files": ["calc/login.py"],
        "rolled_back": True,
        "rolled_back_by": undo,
        "rollback_id": "rb-1",
        "removed_at_line": None,
        "promote_failure": None,
        "line": 0,
    }
    assert rows["add_mul@bbb"]["state"] == "landed" and rows["add_mul@bbb"]["commit"] == second
    assert not rows["add_mul@bbb"]["rolled_back"] and rows["add_mul@bbb"]["operator"] == "bob"
    assert rows["broken@ccc"]["state"] == "verify failed"
    assert rows["broken@ccc"]["files"] == ["calc/ops.py"]
    assert rows["late@ddd"]["state"] == "promote failed"
    assert rows["late@ddd"]["promote_failure"] == "PROMOTE: live moved"
    assert "PATCHES" not in res.summary
    md = (project.path / "audit/results/audit.md").read_text()
    assert "**PASS**" in md
    assert (
        f"| fix_login@aaa | pass | {first[:12]} | alice | calc/login.py | yes, by "
        f"{undo[:12]} (rb-1) |"
    ) in md
    assert f"| add_mul@bbb | pass | {second[:12]} | bob | calc/mul.py | no |" in md
    assert "| late@ddd | pass | - (promote failed: PROMOTE: live moved) | - | - | - |" in md
    assert "| broken@ccc | fail | - (not promoted) | - | calc/ops.py | - |" in md


def test_audit_without_a_log_or_patchgate_commits_passes(project: Project) -> None:
    res = project.run("audit")
    assert res.code == 0, res.out
    assert res.summary["EVENTS"] == "0" and res.summary["COMMITS"] == "0"


def test_audit_of_a_missing_live_repository_fails_in_one_line(project: Project) -> None:
    project.configure(live_repo="nowhere")

    res = project.run("audit")

    assert res.code != 0 and "Traceback" not in res.out
    assert res.summary["REASON"].startswith("live repository ")
    assert "nowhere does not exist" in res.summary["REASON"]


# --- tampering with the log ------------------------------------------------------------------


def test_a_field_edited_in_the_middle_is_named_by_line(project: Project) -> None:
    three_patches(project)
    assert project.run("audit").code == 0  # a checkpoint now covers every line
    lines = log_lines(project)
    assert b'"operator":"jsmith"' in lines[3]
    lines[3] = lines[3].replace(b'"operator":"jsmith"', b'"operator":"mallet"')  # same length
    write_log(project, lines)  # in place: same inode, same size, same last line

    reason = audit_fails(project)

    assert reason.startswith("line 4: content does not match its hash")
    assert results(project)["chain"]["resumed"] is False
    assert "edited in place" in results(project)["chain"]["full_check_reason"]


def test_a_deleted_line_is_named_by_line(project: Project) -> None:
    three_patches(project)
    lines = log_lines(project)
    del lines[2]
    write_log(project, lines)

    assert audit_fails(project).startswith("line 3: seq 3 where 2 was expected")


def test_swapped_lines_are_named_by_line(project: Project) -> None:
    three_patches(project)
    lines = log_lines(project)
    lines[2], lines[3] = lines[3], lines[2]
    write_log(project, lines)

    reason = audit_fails(project)

    assert reason.startswith("line 3: ")
    lines_named = [v["line"] for v in results(project)["violations"] if v["kind"] == "chain"]
    assert 3 in lines_named and 4 in lines_named


def test_a_forged_appended_line_is_named_by_line(project: Project) -> None:
    sha = land(project, "p0", "calc/p0.py")
    assert project.run("audit").code == 0
    last = json.loads(log_lines(project)[-1])
    forged = {
        **last,
        "seq": last["seq"] + 1,
        "prev_hash": last["hash"],
        "patch_id": "p0-again",
        "commit_hash": sha,
    }
    with (project.path / "audit" / "provenance.jsonl").open("a") as fh:
        fh.write(json.dumps(forged) + "\n")  # the hash is the copied line's, not its own

    reason = audit_fails(project)

    assert reason.startswith("line 3: content does not match its hash")
    assert results(project)["chain"]["resumed"] is True  # found by the resumed check


def test_a_log_cut_short_after_an_audit_is_a_violation(project: Project) -> None:
    three_patches(project)
    assert project.run("audit").code == 0
    write_log(project, log_lines(project)[:4])

    reason = audit_fails(project)

    assert reason.startswith("line 6: the event verified here earlier")


# --- history and log, both ways --------------------------------------------------------------


def test_a_patchgate_commit_without_apply_event_fails(project: Project) -> None:
    land(project, "p0", "calc/p0.py")
    sha = land(project, "sneaky@1", "calc/sneaky.py", record=False)

    reason = audit_fails(project)

    assert reason.startswith(f"commit {sha[:12]} (patch sneaky@1) has no apply event in the log")
    row = results(project)["patches"][0]
    assert (row["patch_id"], row["state"], row["commit"]) == ("sneaky@1", "unrecorded", sha)


def test_a_commit_whose_promotion_failed_after_committing_says_so(project: Project) -> None:
    sha = land(project, "p0", "calc/p0.py", record=False)
    event(
        project,
        {
            "event": "promote_fail",
            "patch_id": "p0",
            "stage": "PUSH",
            "reason": "push failed",
            "commit_hash": sha,
        },
    )

    reason = audit_fails(project)

    assert reason.startswith(
        f"commit {sha[:12]} (patch p0) has no apply event in the log (its "
        "promotion failed at PUSH, line 1: finish it with doit promote)"
    )


def test_an_apply_event_naming_a_missing_commit_fails(project: Project) -> None:
    land(project, "p0", "calc/p0.py")
    event(project, {"event": "apply", "patch_id": "ghost", "commit_hash": MISSING_SHA})

    reason = audit_fails(project)

    assert reason.startswith(
        f"line 3: apply event (patch ghost) names commit {MISSING_SHA[:12]}, which does not "
        "exist in live"
    )
    assert results(project)["violations"][0] == {
        "kind": "log",
        "line": 3,
        "commit": MISSING_SHA,
        "message": reason.split("; ")[0],
    }


def test_an_apply_event_naming_a_commit_without_trailers_fails(project: Project) -> None:
    plain = git(project.live, "rev-parse", "HEAD")  # the repository's first commit
    event(project, {"event": "apply", "patch_id": "p0", "commit_hash": plain})

    reason = audit_fails(project)

    assert reason.startswith(
        f"line 1: apply event (patch p0) names commit {plain[:12]}, which is "
        "on main but has no Patchgate-Patch-Id trailer"
    )


def test_an_apply_event_for_another_patch_id_fails(project: Project) -> None:
    sha = land(project, "p0", "calc/p0.py", record=False)
    event(project, {"event": "apply", "patch_id": "p1", "commit_hash": sha})

    reason = audit_fails(project)

    assert reason.startswith(
        f"line 1: apply event (patch p1) names commit {sha[:12]}, whose Patchgate-Patch-Id is p0"
    )


def test_a_rollback_event_whose_revert_reverts_another_commit_fails(project: Project) -> None:
    first, second = land(project, "p0", "calc/p0.py"), land(project, "p1", "calc/p1.py")
    undo = revert(project, first, "rb-1", "p1", reverted_in_event=second)

    reason = audit_fails(project)

    assert reason.startswith(
        f"line 5: rollback event (rb-1, patch p1) says {undo[:12]} reverts {second[:12]}, but "
        f"{undo[:12]} reverts {first[:12]}"
    )


def test_a_rollback_commit_without_rollback_event_fails(project: Project) -> None:
    sha = land(project, "p0", "calc/p0.py")
    git(project.live, "revert", "--no-commit", sha)
    undo = commit_message(
        project.live,
        tr.format_message("Revert p0", "", [(tr.ROLLBACK_ID, "rb-9"), (tr.REVERTS, sha)]),
    )

    reason = audit_fails(project)

    assert reason.startswith(f"commit {undo[:12]} (rollback rb-9) has no rollback event in the log")


# --- a rollback's own verification ----------------------------------------------------------


def test_a_landed_rollbacks_verification_is_reported_as_the_rollback(project: Project) -> None:
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    _, token = plan(project, sha)
    assert confirm(project, sha, token).code == 0
    revert = git(project.live, "rev-parse", "HEAD")

    res = project.run("audit")

    assert res.code == 0, res.out
    (row,) = results(project)["patches"]  # its rollback event has no patch id: a hand commit
    assert row["patch_id"].startswith(f"rollback-{sha[:12]}@")
    assert (row["state"], row["verdict"], row["commit"]) == ("rollback landed", "pass", revert)
    assert (row["operator"], row["files"], row["rolled_back"]) == ("alice", ["README.txt"], False)
    md = (project.path / "audit/results/audit.md").read_text()
    assert (
        f"| {row['patch_id']} | pass | {revert[:12]} (rollback of {sha[:12]}) | alice "
        "| README.txt | no |"
    ) in md
    event(project, {"event": "propose", "patch_id": "next"})  # resumed: the label is in the ledger
    assert project.run("audit").code == 0 and results(project)["chain"]["resumed"] is True
    assert results(project)["patches"][1] == row


def test_a_rollback_killed_before_landing_is_a_rollback_verified_not_a_patch(
    project: Project,
) -> None:
    sha = commit_in(project.live, "README.txt", "calc, by hand\n", "readme by hand")
    _, token = plan(project, sha)
    land = f"step-before:rollback:rollback-{sha[:12]}-land"
    assert confirm(project, sha, token, env={"PATCHGATE_FAULT": land}).code != 0
    assert git(project.live, "rev-parse", "HEAD") == sha  # verified, never landed

    res = project.run("audit")

    assert res.code == 0, res.out
    (row,) = results(project)["patches"]
    assert row["patch_id"].startswith(f"rollback-{sha[:12]}@")
    assert (row["state"], row["verdict"], row["commit"]) == ("rollback verified", "pass", None)
    md = (project.path / "audit/results/audit.md").read_text()
    assert (
        f"| {row['patch_id']} | pass | - (rollback of {sha[:12]}, not landed) | - "
        "| README.txt | - |"
    ) in md


# --- incremental: up to date, resumed --------------------------------------------------------


def test_second_audit_with_nothing_changed_is_up_to_date(project: Project) -> None:
    land(project, "p0", "calc/p0.py")
    assert project.run("audit").code == 0

    again = project.run("audit")

    assert again.code == 0, again.out
    assert "-- audit" in again.out and ".  audit" not in again.out
    assert again.summary["RESULT"] == "SUCCESS" and again.summary["EVENTS"] == "2"


def test_audit_after_one_append_resumes_and_reads_one_line(project: Project) -> None:
    three_patches(project)
    assert project.run("audit").code == 0
    assert results(project)["chain"]["lines_parsed"] == 6
    event(project, {"event": "propose", "patch_id": "next"})

    res = project.run("audit")

    assert res.code == 0, res.out
    assert ".  audit" in res.out
    chain = results(project)["chain"]
    assert chain["resumed"] is True and chain["lines_parsed"] == 1 and chain["events"] == 7
    assert results(project)["history"]["walked"] == 0


def test_audit_after_a_new_commit_walks_only_the_new_commit(project: Project) -> None:
    first = land(project, "p0", "calc/p0.py")
    assert project.run("audit").code == 0
    land(project, "p1", "calc/p1.py")

    res = project.run("audit")

    assert res.code == 0, res.out
    history = results(project)["history"]
    assert history == {
        "commits": 2,
        "patch_commits": 2,
        "rollback_commits": 0,
        "walked": 1,
        "incremental": True,
        "previous_tip": first,
    }


def test_deleting_the_checkpoint_forces_a_full_check(project: Project) -> None:
    three_patches(project)
    assert project.run("audit").code == 0
    (project.path / "audit/results/chain-checkpoint.json").unlink()

    res = project.run("audit")

    assert res.code == 0 and ".  audit" in res.out
    assert results(project)["chain"]["resumed"] is False
    assert results(project)["chain"]["lines_parsed"] == 6


def test_resumed_checkpoint_digest_covers_the_whole_prefix(tmp_path: Path) -> None:
    root = str(tmp_path)
    for i in range(3):
        provenance.append_event(root, {"event": "propose", "patch_id": f"p{i}"})
    full = provenance.verify_chain(root)
    provenance.append_event(root, {"event": "propose", "patch_id": "p3"})
    resumed = provenance.verify_chain(root, full.checkpoint, check_prefix=True)
    again = provenance.verify_chain(root)

    assert resumed.resumed and resumed.lines_parsed == 1
    digest = hashlib.sha256((tmp_path / provenance.LOG_PATH).read_bytes()).hexdigest()
    assert resumed.checkpoint.prefix_sha256 == again.checkpoint.prefix_sha256 == digest


# --- doit record -----------------------------------------------------------------------------


def test_record_appends_a_chained_emergency_rollback(project: Project) -> None:
    good = git(project.live, "rev-parse", "HEAD")
    land(project, "p0", "calc/p0.py")

    res = project.run(
        "record",
        "event=emergency_rollback",
        f"last_good={good[:8]}",
        "reason=prod down, patchgate offline",
        "operator=jsmith",
    )

    assert res.code == 0, res.out
    assert res.summary["LAST_GOOD"] == good
    chain = provenance.verify_chain(str(project.path))
    assert chain.ok
    last = chain.events[-1][1]
    assert last["seq"] == 2 and last["prev_hash"] == chain.events[-2][1]["hash"]
    assert {
        k: last[k] for k in ("event", "patch_id", "operator", "last_good_commit", "reason")
    } == {
        "event": "emergency_rollback",
        "patch_id": "-",
        "operator": "jsmith",
        "last_good_commit": good,
        "reason": "prod down, patchgate offline",
    }


def test_emergency_rollback_explains_the_commits_it_removed(project: Project) -> None:
    good = git(project.live, "rev-parse", "HEAD")
    gone = land(project, "p0", "calc/p0.py")
    git(project.live, "reset", "-q", "--hard", good)
    assert audit_fails(project).startswith(
        f"line 2: apply event (patch p0) names commit {gone[:12]}, which is not on main"
    )
    assert (
        project.run(
            "record",
            "event=emergency_rollback",
            f"last_good={good}",
            "reason=bad release",
            "operator=jsmith",
        ).code
        == 0
    )

    res = project.run("audit")

    assert res.code == 0, res.out
    data = results(project)
    assert data["patches"][0]["state"] == "removed" and data["patches"][0]["removed_at_line"] == 3
    assert data["emergency_rollbacks"][0]["last_good_commit"] == good
    assert "emergency_rollback at line 3" in data["notes"][0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["event=emergency_rollback", "last_good=HEAD", "reason=down"],
            "emergency_rollback needs operator=…",
        ),
        (
            ["event=emergency_rollback", f"last_good={MISSING_SHA}", "reason=down", "operator=js"],
            f"last_good={MISSING_SHA} is not a commit in live repository",
        ),
        (
            ["event=emergency_rollback", "last_good=--all", "reason=down", "operator=js"],
            "last_good=--all is not a commit in live repository",
        ),
        (
            ["event=rolback", "last_good=HEAD", "reason=down", "operator=js"],
            "event=rolback is unknown",
        ),
        (
            ["event=apply", "last_good=HEAD", "reason=down", "operator=js"],
            "event=apply is written by doit promote, never by hand",
        ),
        (["last_good=HEAD", "reason=down", "operator=js"], "which event?"),
        (
            ["event=emergency_rollback", "last_good=HEAD", "reason=down", "operator=js", "foo=1"],
            "unknown variable foo=",
        ),
    ],
)
def test_record_refuses_bad_input_in_one_line(
    project: Project, args: list[str], expected: str
) -> None:
    land(project, "p0", "calc/p0.py")
    before = log_lines(project)

    res = project.run("record", *args)

    assert res.code != 0, res.out
    assert res.summary["RESULT"] == "FAIL"
    assert res.summary["REASON"].startswith(expected), res.summary["REASON"]
    assert "Traceback" not in res.out
    assert log_lines(project) == before


# --- doit history ----------------------------------------------------------------------------


def history_lines(res: Any) -> list[str]:
    """The commit lines: a 12-digit sha, two spaces (the header line says "commit")."""
    lines = res.out.splitlines()
    assert any(ln.startswith("commit        landed (UTC)") for ln in lines), res.out
    return [ln for ln in lines if ln[:12].isalnum() and ln[12:14] == "  " and ln[:6] != "commit"]


def test_history_lists_the_latest_commits_newest_first(project: Project) -> None:
    shas = three_patches(project)
    undo = revert(project, shas[1], "rb-1", "p1")

    res = project.run("history", "n=3")

    assert res.code == 0, res.out
    rows = history_lines(res)
    assert [r[:12] for r in rows] == [undo[:12], shas[2][:12], shas[1][:12]]
    assert "rollback rb-1" in rows[0] and f"reverts {shas[1][:12]}" in rows[0]
    assert "p2" in rows[1] and "pass" in rows[1] and "jsmith" in rows[1]
    assert "calc/p2.py" in rows[1] and "rolled back" not in rows[1]
    assert rows[2].endswith(f"rolled back by {undo[:12]}")
    assert res.summary["COMMITS"] == "3"


def test_history_shows_ten_by_default_and_refuses_a_bad_n(project: Project) -> None:
    for i in range(11):
        land(project, f"p{i}", f"calc/p{i}.py", record=False)
    assert len(history_lines(project.run("history"))) == 10
    bad = project.run("history", "n=zero")
    assert bad.code != 0 and bad.summary["REASON"].startswith("n=zero must be a whole number")


# --- the post-promotion audit command --------------------------------------------------------


def test_audit_command_runs_in_live(project: Project, tmp_path: Path) -> None:
    log = str(tmp_path / "promote.log")
    audit.run_audit_command(
        str(project.path), ["git", "-C", "{live}", "status", "--short"], str(project.live), log
    )
    assert "audit_command: git -C" in Path(log).read_text()


def test_failing_audit_command_is_an_audit_failure(project: Project, tmp_path: Path) -> None:
    log = str(tmp_path / "promote.log")
    with pytest.raises(PatchgateError) as caught:
        audit.run_audit_command(
            str(project.path), ["sh", "-c", "echo bad tree; exit 3"], str(project.live), log
        )
    assert caught.value.stage == "AUDIT"
    assert caught.value.message == (
        "audit_command sh -c 'echo bad tree; exit 3' exited 3 on live: bad tree; see the log"
    )

"""The audit's pure parts, tested directly: the fold, the cross-check's judging, the report.

No doit run and no git: the histories here hold every commit the events name, so the
cross-check resolves them without asking live (tests/test_audit.py covers what a user sees).
"""

from __future__ import annotations

from typing import Any

from patchgate import audit_report, trailers
from patchgate.audit_check import cross_check
from patchgate.audit_history import Commit, commit_of
from patchgate.audit_ledger import Ledger, fold, same_commit
from patchgate.errors import PatchgateError, fix_of
from patchgate.provenance import NO_PATCH, EventKind

A = "a" * 40
B = "b" * 40
C = "c" * 40


def events(*evs: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(evs, 1))


def folded(*evs: dict[str, Any]) -> Ledger:
    ledger = Ledger()
    fold(ledger, events(*evs))
    return ledger


def patch_commit(sha: str, patch_id: str, **kw: Any) -> Commit:
    fields: dict[str, Any] = {
        "rollback_id": None,
        "reverts": None,
        "operator": "ann",
        "files": ["a.py"],
        "verdict": "pass",
        "problem": None,
    }
    return Commit(sha, patch_id, **{**fields, **kw})


def revert_commit(sha: str, rollback_id: str, reverts: str) -> Commit:
    return Commit(sha, None, rollback_id, reverts, "bob", [], None, None)


APPLY_P1 = {"event": "apply", "patch_id": "p1", "commit_hash": A, "files": ["a.py"]}


# --- the fold: events by kind into the ledger ----------------------------------------------


def test_fold_counts_kinds_and_keeps_a_patchs_latest_state() -> None:
    ledger = folded(
        {"event": "propose", "patch_id": "p1", "confidence_score": 0.5},
        {"event": "verify_fail", "patch_id": "p1", "affected_files": ["a.py"]},
        {"event": "verify_pass", "patch_id": "p1", "affected_files": ["a.py", "b.py"]},
        {**APPLY_P1, "operator": "ann"},
    )
    assert ledger.events == 4
    assert ledger.kinds == {"propose": 1, "verify_fail": 1, "verify_pass": 1, "apply": 1}
    state = ledger.patches["p1"]
    assert (state.line, state.verdict, state.files) == (4, "pass", ["a.py", "b.py"])
    assert state.confidence == 0.5
    assert ledger.applies[0].commit == A and ledger.applies[0].operator == "ann"


def test_fold_orders_patches_by_their_latest_event() -> None:
    ledger = folded(
        {"event": "verify_pass", "patch_id": "p1"},
        {"event": "verify_pass", "patch_id": "p2"},
        {"event": "verify_fail", "patch_id": "p1"},
    )
    assert list(ledger.patches) == ["p2", "p1"]
    assert ledger.patches["p1"].verdict == "fail"


def test_fold_labels_an_excused_pass() -> None:
    gates = {"ruff": "excused", "pytest": "pass"}
    ledger = folded({"event": "verify_pass", "patch_id": "p1", "gates": gates})
    assert ledger.patches["p1"].verdict == "pass (excused: ruff)"


def test_fold_keeps_a_failed_promotion_until_an_apply_lands_it() -> None:
    fail = {"event": "promote_fail", "patch_id": "p1", "stage": "PUSH", "reason": "rejected"}
    ledger = folded({**fail, "commit_hash": A})
    assert ledger.patches["p1"].promote_failure == "PUSH: rejected"
    assert ledger.unfinished == {A: [1, "PUSH"]}
    fold(ledger, [(2, APPLY_P1)])
    assert ledger.patches["p1"].promote_failure is None


def test_fold_records_rollbacks_emergencies_and_a_reverts_verification() -> None:
    ledger = folded(
        {"event": "verify_pass", "patch_id": "r@1", "issue": f"rollback-{A[:12]}"},
        {
            "event": "rollback",
            "patch_id": "p1",
            "rollback_id": "rb-1",
            "revert_commit": B,
            "reverted_commit": A,
        },
        {"event": "emergency_rollback", "patch_id": NO_PATCH, "last_good_commit": C},
    )
    assert ledger.patches["r@1"].rollback_of == A[:12]
    assert ledger.rollbacks[0][2:5] == ("rb-1", B, A)
    assert ledger.emergencies[0].last_good == C
    assert NO_PATCH not in ledger.patches  # an event of no patch is no patch's state


def test_fold_survives_events_of_the_wrong_shape() -> None:
    ledger = folded({"event": 7, "patch_id": ["x"], "files": "a.py"}, {"event": "apply"})
    assert ledger.kinds == {"?": 1, "apply": 1}
    assert ledger.applies[0].patch_id == NO_PATCH and ledger.applies[0].commit == ""


def test_ledger_survives_its_cache_round_trip() -> None:
    ledger = folded({"event": "propose", "patch_id": "p1", "confidence_score": 0.9}, APPLY_P1)
    again = Ledger.from_dict(ledger.to_dict())
    assert again == ledger


def test_event_kinds_compare_as_the_strings_in_the_log() -> None:
    assert EventKind.APPLY == "apply" and {EventKind.APPLY: 1}["apply"] == 1
    assert f"{EventKind.EMERGENCY_ROLLBACK}" == "emergency_rollback"


# --- commit ids and trailers ---------------------------------------------------------------


def test_same_commit_accepts_abbreviations_of_seven_or_more() -> None:
    assert same_commit(A, A[:7]) and same_commit(A[:12], A)
    assert not same_commit(A, A[:6])
    assert not same_commit(A, B)
    assert not same_commit("", A)


def test_commit_of_reads_the_trailers() -> None:
    info = trailers.CommitInfo(
        A,
        "fix",
        {
            trailers.PATCH_ID: ["p1"],
            trailers.OPERATOR: ["ann"],
            trailers.FILES: ["a.py, b.py"],
            trailers.VERIFICATION: ["pass"],
        },
    )
    assert commit_of(info) == patch_commit(A, "p1", files=["a.py", "b.py"])


def test_commit_of_finds_the_reverted_commit_in_the_message() -> None:
    info = trailers.CommitInfo(B, "Revert", {trailers.ROLLBACK_ID: ["rb-1"]})
    assert commit_of(info, f"Revert\n\nThis reverts commit {A}.\n").reverts == A
    bare = commit_of(info)
    assert bare.reverts is None and "without a Patchgate-Reverts" in str(bare.problem)


def test_commit_of_names_duplicate_markers_and_a_bad_reverts() -> None:
    info = trailers.CommitInfo(
        B, "x", {trailers.PATCH_ID: ["p1", "p2"], trailers.REVERTS: ["not-a-sha"]}
    )
    problem = str(commit_of(info).problem)
    assert "2 Patchgate-Patch-Id trailers" in problem
    assert "'not-a-sha' is not a commit id" in problem


# --- the cross-check: judging the log against history, both ways ---------------------------


def judged(commits: list[Commit], *evs: dict[str, Any]) -> list[str]:
    return [v.message for v in cross_check("/nowhere", "main", A, commits, folded(*evs)).violations]


def test_an_apply_and_its_commit_agree() -> None:
    check = cross_check("/nowhere", "main", A, [patch_commit(A, "p1")], folded(APPLY_P1))
    assert check.violations == [] and check.applied == {A}


def test_a_commit_without_its_apply_event_is_a_violation() -> None:
    assert judged([patch_commit(A, "p1")]) == [
        f"commit {A[:12]} (patch p1) has no apply event in the log"
    ]


def test_a_commit_whose_promotion_failed_says_how_to_finish_it() -> None:
    fail = {"event": "promote_fail", "patch_id": "p1", "stage": "PUSH", "commit_hash": A}
    (message,) = judged([patch_commit(A, "p1")], fail)
    assert "its promotion failed at PUSH, line 1: finish it with doit promote" in message


def test_an_apply_naming_another_patchs_commit_is_a_violation() -> None:
    (message,) = judged([patch_commit(A, "p2")], APPLY_P1)
    assert message == (
        f"line 1: apply event (patch p1) names commit {A[:12]}, whose Patchgate-Patch-Id is p2"
    )


def test_an_apply_naming_no_commit_id_is_a_violation() -> None:
    (message,) = judged([], {**APPLY_P1, "commit_hash": "HEAD"})
    assert message == "line 1: apply event (patch p1) names commit 'HEAD', which is not a commit id"


def test_a_rollback_must_revert_what_its_event_says() -> None:
    rollback = {
        "event": "rollback",
        "patch_id": "p1",
        "rollback_id": "rb-1",
        "revert_commit": B,
        "reverted_commit": C,
    }
    history = [revert_commit(B, "rb-1", A), patch_commit(A, "p1"), patch_commit(C, "p3")]
    messages = judged(history, APPLY_P1, {**APPLY_P1, "patch_id": "p3", "commit_hash": C}, rollback)
    assert messages == [
        f"line 3: rollback event (rb-1, patch p1) says {B[:12]} reverts {C[:12]}, "
        f"but {B[:12]} reverts {A[:12]}"
    ]


def test_a_revert_without_its_rollback_event_is_a_violation() -> None:
    history = [revert_commit(B, "rb-1", A), patch_commit(A, "p1")]
    check = cross_check("/nowhere", "main", B, history, folded(APPLY_P1))
    assert [v.message for v in check.violations] == [
        f"commit {B[:12]} (rollback rb-1) has no rollback event in the log"
    ]
    assert check.rolled_back == {A: (B, "rb-1")}  # still shown as rolled back


def test_unparsable_trailers_are_a_history_violation() -> None:
    (message,) = judged([patch_commit(A, "p1", problem="2 Patchgate-Patch-Id trailers")], APPLY_P1)
    assert message.endswith("trailers do not parse: 2 Patchgate-Patch-Id trailers")


# --- the report ----------------------------------------------------------------------------


def test_patch_rows_join_the_ledger_with_history() -> None:
    ledger = folded({"event": "verify_pass", "patch_id": "p1"}, APPLY_P1)
    ledger_only = folded({"event": "verify_fail", "patch_id": "p2"})
    fold(ledger, [(3, {"event": "verify_fail", "patch_id": "p2"})])
    history = [patch_commit(A, "p1"), patch_commit(C, "p9")]
    check = cross_check("/nowhere", "main", A, history, ledger)
    rows = audit_report.patch_rows(ledger, history, check, 10)
    assert [(r["patch_id"], r["state"], r["commit"]) for r in rows] == [
        ("p9", "unrecorded", C),
        ("p2", "verify failed", None),
        ("p1", "landed", A),
    ]
    assert audit_report.patch_rows(ledger, history, check, 1)[0]["patch_id"] == "p9"
    assert ledger_only.patches["p2"].verdict == "fail"


def test_format_history_aligns_the_columns() -> None:
    row = {
        "commit": A,
        "landed": "2026-01-01 00:00:00",
        "patch_id": "p1",
        "rollback_id": None,
        "reverts": None,
        "verdict": "pass",
        "operator": "ann",
        "files": ["a.py", "b.py", "c.py", "d.py"],
        "rolled_back_by": B,
    }
    header, line = audit_report.format_history([row])
    assert header.index("landed") == line.index("2026")
    assert line.endswith(f"a.py, b.py, c.py +1 more  rolled back by {B[:12]}")
    assert audit_report.format_history([]) == []


# --- the fix of an error -------------------------------------------------------------------


def test_the_fix_is_the_part_after_the_last_semicolon() -> None:
    err = PatchgateError("AUDIT", "a; b went wrong; run doit audit")
    assert (err.message, err.fix) == ("a; b went wrong; run doit audit", "run doit audit")
    assert fix_of("no fix here") is None
    assert fix_of("; only a fix") is None  # nothing happened before it
    assert fix_of("ends with; ") is None


def test_a_fix_given_apart_ends_the_message() -> None:
    err = PatchgateError("AUDIT", "the log is torn", fix="run doit audit")
    assert str(err) == err.message == "the log is torn; run doit audit"
    assert err.fix == "run doit audit" and err.stage == "AUDIT"

"""The provenance log: append-only, hash-chained, torn-line safe, tamper-evident."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from patchgate import provenance
from patchgate.errors import PatchgateError
from patchgate.provenance import (
    GENESIS_HASH,
    ChainCheckpoint,
    append_event,
    read_events,
    record_event,
    verify_chain,
)

PROJECT = str(Path(provenance.__file__).resolve().parent.parent)
SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "89abcdef0123456789abcdef0123456789abcdef"

EVERY_KIND: list[dict[str, Any]] = [
    {
        "event": "propose",
        "patch_id": "p-1",
        "confidence_score": 0.87,
        "model": "codellama-13b",
        "llm_endpoint": "http://127.0.0.1:8080",
        "affected_files": ["src/module.py"],
        "explanation": "Fixed import error — naïve path",
    },
    {
        "event": "verify_fail",
        "patch_id": "p-1",
        "stage": "GATE",
        "reason": "mypy failed",
        "build_status": "pass",
        "test_results": [{"command": "pytest -q", "exit_code": 1, "duration_seconds": 2.5}],
        "gates": {"ruff": "pass", "mypy": "fail"},
    },
    {
        "event": "verify_pass",
        "patch_id": "p-1",
        "build_status": "pass",
        "test_results": [{"command": "pytest -q", "exit_code": 0, "duration_seconds": 2.1}],
        "gates": {"ruff": "pass", "mypy": "pass", "pytest": "pass"},
    },
    {"event": "promote_fail", "patch_id": "p-1", "stage": "PROMOTE", "reason": "live moved"},
    {
        "event": "apply",
        "patch_id": "p-1",
        "commit_hash": SHA,
        "operator": "jsmith",
        "operator_confirmed": True,
        "push": "OK",
        "files": ["src/module.py"],
    },
    {
        "event": "rollback",
        "patch_id": "p-1",
        "rollback_id": "rb-20251029-150315",
        "reason": "ci_failure",
        "failure_context": "TestIntegration::test_startup failed",
        "operator": "jsmith",
        "operator_confirmed": True,
        "revert_commit": SHA2,
        "reverted_commit": SHA,
    },
    {
        "event": "emergency_rollback",
        "patch_id": "-",
        "operator": "jsmith",
        "last_good_commit": SHA2,
        "reason": "Critical production issue, patchgate offline",
    },
]


def log_file(root: Path) -> Path:
    return root / "audit" / "provenance.jsonl"


def fill(root: Path, n: int) -> list[dict[str, Any]]:
    return [append_event(str(root), {"event": "propose", "patch_id": f"p-{i}"}) for i in range(n)]


def lines(root: Path) -> list[bytes]:
    return log_file(root).read_bytes().splitlines(keepends=True)


def rewrite(root: Path, new_lines: list[bytes]) -> None:
    log_file(root).write_bytes(b"".join(new_lines))


def violation_lines(root: Path) -> list[int]:
    return [v.line_no for v in verify_chain(str(root)).violations]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": PROJECT}


# --- appending -------------------------------------------------------------------------------


def test_every_kind_appends_and_the_chain_verifies(tmp_path: Path) -> None:
    written = [append_event(str(tmp_path), e) for e in EVERY_KIND]

    report = verify_chain(str(tmp_path))
    assert report.ok and report.first_violation is None
    assert [e for _, e in report.events] == written == read_events(str(tmp_path))
    assert [line for line, _ in report.events] == list(range(1, len(EVERY_KIND) + 1))
    assert [e["seq"] for e in written] == list(range(len(EVERY_KIND)))
    assert written[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(written):
        assert after["prev_hash"] == before["hash"]
    for given, event in zip(EVERY_KIND, written, strict=True):
        assert {k: event[k] for k in given} == given
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["timestamp"])


def test_hash_is_sha256_of_the_canonical_json_without_the_hash_key(tmp_path: Path) -> None:
    event = append_event(str(tmp_path), EVERY_KIND[0])
    on_disk = json.loads(lines(tmp_path)[0])
    body = {k: v for k, v in on_disk.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert on_disk["hash"] == hashlib.sha256(canonical.encode()).hexdigest() == event["hash"]
    assert "naïve" in lines(tmp_path)[0].decode("utf-8")  # written as UTF-8, not \\u escapes


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"event": "verify_fail", "patch_id": "p", "stage": "GATE"}, "reason"),
        ({"event": "apply", "patch_id": "p"}, "commit_hash"),
        ({"event": "emergency_rollback", "patch_id": "-", "operator": "x", "reason": "r"}, "last"),
        ({"event": "propose", "patch_id": "p", "confidence_score": "high"}, "confidence_score"),
        ({"event": "apply", "patch_id": "p", "commit_hash": SHA, "push": "MAYBE"}, "push"),
        ({"event": "deploy", "patch_id": "p"}, "event"),
        ({"event": "propose"}, "patch_id"),
    ],
)
def test_invalid_event_is_rejected_and_the_log_is_unchanged(
    tmp_path: Path, event: dict[str, Any], named: str
) -> None:
    fill(tmp_path, 2)
    before = log_file(tmp_path).read_bytes()

    with pytest.raises(PatchgateError) as err:
        append_event(str(tmp_path), event)

    assert err.value.stage == "PROVENANCE"
    assert named in err.value.message
    assert log_file(tmp_path).read_bytes() == before


def test_event_that_is_not_plain_json_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PatchgateError, match="not plain JSON"):
        append_event(str(tmp_path), {"event": "propose", "patch_id": "p", "files": {tmp_path}})
    with pytest.raises(PatchgateError, match="not plain JSON"):
        append_event(str(tmp_path), {"event": "propose", "patch_id": "p", "score": float("nan")})
    assert not log_file(tmp_path).exists()


def test_caller_cannot_set_the_chain_fields(tmp_path: Path) -> None:
    with pytest.raises(PatchgateError, match="hash"):
        append_event(str(tmp_path), {"event": "propose", "patch_id": "p", "hash": "0" * 64})
    with pytest.raises(PatchgateError, match="recovered"):
        append_event(str(tmp_path), {"event": "recovered", "patch_id": "-", "torn_line": 1})
    assert not log_file(tmp_path).exists()


# --- tampering -------------------------------------------------------------------------------


def test_modified_field_is_found_at_its_line(tmp_path: Path) -> None:
    fill(tmp_path, 6)
    text = lines(tmp_path)
    text[2] = text[2].replace(b'"p-2"', b'"p-X"')
    rewrite(tmp_path, text)

    report = verify_chain(str(tmp_path))
    assert [v.line_no for v in report.violations] == [3]
    assert "modified" in report.violations[0].message


def test_deleted_line_is_found_where_it_was(tmp_path: Path) -> None:
    fill(tmp_path, 6)
    text = lines(tmp_path)
    del text[2]
    rewrite(tmp_path, text)

    report = verify_chain(str(tmp_path))
    assert [v.line_no for v in report.violations] == [3]
    assert "missing" in report.violations[0].message


def test_inserted_line_is_found_and_the_chain_resumes_after_it(tmp_path: Path) -> None:
    fill(tmp_path, 6)
    text = lines(tmp_path)
    text.insert(3, text[1])  # a copy of a genuine event
    rewrite(tmp_path, text)

    assert violation_lines(tmp_path) == [4]


def test_swapped_lines_are_found(tmp_path: Path) -> None:
    fill(tmp_path, 6)
    text = lines(tmp_path)
    text[2], text[3] = text[3], text[2]
    rewrite(tmp_path, text)

    report = verify_chain(str(tmp_path))
    assert [v.line_no for v in report.violations] == [3, 4]
    assert "swapped" in report.violations[1].message


def test_forged_appended_line_is_found(tmp_path: Path) -> None:
    last = fill(tmp_path, 4)[-1]
    forged = {
        "seq": last["seq"] + 1,
        "timestamp": last["timestamp"],
        "event": "apply",
        "patch_id": "evil",
        "commit_hash": SHA,
        "prev_hash": last["hash"],
        "hash": "f" * 64,
    }
    with log_file(tmp_path).open("a") as fh:
        fh.write(json.dumps(forged) + "\n")

    assert violation_lines(tmp_path) == [5]


def test_invalid_json_in_the_middle_without_a_recovered_event_is_a_violation(
    tmp_path: Path,
) -> None:
    fill(tmp_path, 4)
    text = lines(tmp_path)
    text.insert(2, b'{"seq": 2, "garbage\n')
    rewrite(tmp_path, text)

    report = verify_chain(str(tmp_path))
    assert [v.line_no for v in report.violations] == [3]
    assert "no recovered event" in report.violations[0].message


def test_recovered_event_naming_a_valid_line_is_a_violation(tmp_path: Path) -> None:
    last = fill(tmp_path, 3)[-1]
    fake = provenance.chain_event(
        {"event": "recovered", "patch_id": "-", "torn_line": 2, "torn_bytes": 10},
        last["seq"] + 1,
        last["hash"],
        last["timestamp"],
    )
    with log_file(tmp_path).open("ab") as fh:
        fh.write(provenance.format_line(fake))

    report = verify_chain(str(tmp_path))
    assert [v.line_no for v in report.violations] == [4]
    assert "not an unaccounted torn line" in report.violations[0].message


# --- torn lines ------------------------------------------------------------------------------


def test_torn_line_is_kept_and_recovered_by_the_next_append(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    torn = b'{"seq":3,"timestamp":"2025-01-01T00:00:00Z","ev'
    with log_file(tmp_path).open("ab") as fh:
        fh.write(torn)
    assert verify_chain(str(tmp_path)).pending_torn == [4]  # not yet a violation

    event = append_event(str(tmp_path), {"event": "propose", "patch_id": "after"})

    text = lines(tmp_path)
    assert text[3] == torn + b"\n"  # never rewritten, only terminated
    recovered = json.loads(text[4])
    assert recovered["event"] == "recovered"
    assert (recovered["torn_line"], recovered["torn_bytes"]) == (4, len(torn))
    assert recovered["seq"] == 3 and recovered["prev_hash"] == json.loads(text[2])["hash"]
    assert json.loads(text[5]) == event and event["seq"] == 4
    report = verify_chain(str(tmp_path))
    assert report.ok and report.pending_torn == []
    assert [e["patch_id"] for e in read_events(str(tmp_path))][-2:] == ["-", "after"]


def test_two_torn_lines_in_a_row_get_one_recovered_event_each(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    with log_file(tmp_path).open("ab") as fh:
        fh.write(b'{"seq":2,"ti')  # a writer died
        fh.write(b'\n{"seq":2,"event":"recov')  # the next died while recovering it

    append_event(str(tmp_path), {"event": "propose", "patch_id": "after"})

    events = read_events(str(tmp_path))
    assert [(e.get("torn_line"), e.get("torn_bytes")) for e in events[2:4]] == [(3, 12), (4, 23)]
    assert verify_chain(str(tmp_path)).ok


def test_complete_line_missing_only_its_newline_is_terminated_not_recovered(
    tmp_path: Path,
) -> None:
    last = fill(tmp_path, 2)[-1]
    whole = provenance.chain_event(
        {"event": "propose", "patch_id": "nearly"}, 2, last["hash"], last["timestamp"]
    )
    with log_file(tmp_path).open("ab") as fh:
        fh.write(provenance.format_line(whole)[:-1])

    append_event(str(tmp_path), {"event": "propose", "patch_id": "after"})

    events = read_events(str(tmp_path))
    assert [e["patch_id"] for e in events] == ["p-0", "p-1", "nearly", "after"]
    assert verify_chain(str(tmp_path)).ok


WRITER_KILLED_MID_LINE = """
import os, sys, time
from patchgate import provenance
real_write = os.write
def half_then_hang(fd, data):
    real_write(fd, bytes(data)[: len(data) // 2])
    sys.stdout.write("torn\\n"); sys.stdout.flush()
    time.sleep(60)
provenance.os.write = half_then_hang
provenance.append_event(sys.argv[1], {"event": "propose", "patch_id": "doomed"})
"""


def test_writer_killed_mid_write_leaves_a_torn_line_the_next_append_recovers(
    tmp_path: Path,
) -> None:
    fill(tmp_path, 3)
    size = log_file(tmp_path).stat().st_size
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_KILLED_MID_LINE, str(tmp_path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "torn\n"  # half a line written, lock held
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    child.stdout.close()
    torn_bytes = log_file(tmp_path).stat().st_size - size
    assert torn_bytes > 0 and not log_file(tmp_path).read_bytes().endswith(b"\n")
    with open(tmp_path / "audit" / "provenance.lock", "rb") as lock:  # the kill freed it
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    append_event(str(tmp_path), {"event": "propose", "patch_id": "survivor"})

    events = read_events(str(tmp_path))
    assert [e["event"] for e in events[-2:]] == ["recovered", "propose"]
    assert (events[-2]["torn_line"], events[-2]["torn_bytes"]) == (4, torn_bytes)
    assert "doomed" not in [e["patch_id"] for e in events]
    report = verify_chain(str(tmp_path))
    assert report.ok and [e["seq"] for _, e in report.events] == [0, 1, 2, 3, 4]


def test_invalid_event_after_a_torn_line_writes_nothing(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    with log_file(tmp_path).open("ab") as fh:
        fh.write(b'{"seq":2')
    before = log_file(tmp_path).read_bytes()

    with pytest.raises(PatchgateError):
        append_event(str(tmp_path), {"event": "apply", "patch_id": "p"})

    assert log_file(tmp_path).read_bytes() == before


# --- concurrency -----------------------------------------------------------------------------

CONCURRENT_WRITER = """
import os, sys, time
from patchgate.provenance import append_event
root, writer, count, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
while not os.path.exists(gate):
    time.sleep(0.001)
for i in range(count):
    append_event(root, {"event": "propose", "patch_id": f"w{writer}", "n": i})
"""


def test_concurrent_writer_processes_keep_one_unbroken_chain(tmp_path: Path) -> None:
    writers, each = 8, 500
    gate = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(tmp_path), str(w), str(each), str(gate)],
            env=child_env(),
        )
        for w in range(writers)
    ]
    time.sleep(0.3)  # let them all start, so they contend
    gate.touch()
    assert [c.wait(timeout=60) for c in children] == [0] * writers

    raw = lines(tmp_path)
    assert len(raw) == writers * each and all(line.endswith(b"\n") for line in raw)
    events = [json.loads(line) for line in raw]  # no interleaved or torn line
    assert [e["seq"] for e in events] == list(range(writers * each))
    for w in range(writers):
        assert [e["n"] for e in events if e["patch_id"] == f"w{w}"] == list(range(each))
    report = verify_chain(str(tmp_path))
    assert report.ok and len(report.events) == writers * each


# --- incremental verification ----------------------------------------------------------------


def test_incremental_verify_parses_only_the_appended_line(tmp_path: Path) -> None:
    fill(tmp_path, 50)
    full = verify_chain(str(tmp_path))
    assert full.lines_parsed == 50 and not full.resumed

    new = append_event(str(tmp_path), {"event": "propose", "patch_id": "new"})
    resumed = verify_chain(str(tmp_path), full.checkpoint)

    assert resumed.resumed and resumed.ok
    assert resumed.lines_parsed == 1
    assert resumed.events == [(51, new)]
    again = verify_chain(str(tmp_path), resumed.checkpoint)
    assert again.resumed and again.lines_parsed == 0 and again.checkpoint == resumed.checkpoint


def test_incremental_verify_notices_a_prefix_replaced_behind_its_back(tmp_path: Path) -> None:
    fill(tmp_path, 20)
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    text = lines(tmp_path)
    text[4] = text[4].replace(b'"p-4"', b'"p-Y"')
    replacement = tmp_path / "audit" / "forged.jsonl"
    replacement.write_bytes(b"".join(text))
    os.replace(replacement, log_file(tmp_path))  # the usual way an editor saves
    append_event(str(tmp_path), {"event": "propose", "patch_id": "later"})

    report = verify_chain(str(tmp_path), checkpoint)

    assert not report.resumed and "replaced" in report.full_check_reason
    assert report.lines_parsed == 21
    assert [v.line_no for v in report.violations] == [5]


def test_incremental_verify_notices_the_last_verified_line_edited_in_place(
    tmp_path: Path,
) -> None:
    fill(tmp_path, 5)
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    with open(log_file(tmp_path), "r+b") as fh:  # same inode, same size
        data = fh.read()
        fh.seek(0)
        fh.write(data.replace(b'"p-4"', b'"p-Z"'))

    report = verify_chain(str(tmp_path), checkpoint)

    assert not report.resumed and "last verified line changed" in report.full_check_reason
    assert [v.line_no for v in report.violations] == [5]


def test_incremental_verify_keeps_the_prefix_violations(tmp_path: Path) -> None:
    fill(tmp_path, 5)
    text = lines(tmp_path)
    text[1] = text[1].replace(b'"p-1"', b'"p-W"')
    rewrite(tmp_path, text)
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    append_event(str(tmp_path), {"event": "propose", "patch_id": "new"})

    report = verify_chain(str(tmp_path), checkpoint)

    assert report.resumed and report.lines_parsed == 1
    assert [v.line_no for v in report.violations] == [2]


def test_incremental_verify_resumes_across_a_torn_line(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    with log_file(tmp_path).open("ab") as fh:
        fh.write(b'{"seq":3,"tor')
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    assert checkpoint.line_count == 3  # the unterminated line is not part of it
    append_event(str(tmp_path), {"event": "propose", "patch_id": "new"})

    report = verify_chain(str(tmp_path), checkpoint)

    assert report.resumed and report.ok and report.lines_parsed == 3
    assert [e["event"] for _, e in report.events] == ["recovered", "propose"]


def test_a_log_cut_short_after_a_checkpoint_is_a_violation(tmp_path: Path) -> None:
    fill(tmp_path, 6)
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    rewrite(tmp_path, lines(tmp_path)[:4])
    assert verify_chain(str(tmp_path)).ok  # what a chain alone cannot see

    report = verify_chain(str(tmp_path), checkpoint)

    assert "shorter" in report.full_check_reason
    assert [v.line_no for v in report.violations] == [6]
    assert "cut short or rewritten" in report.violations[0].message
    later = verify_chain(str(tmp_path), report.checkpoint)  # and it stays reported
    assert later.resumed and [v.line_no for v in later.violations] == [6]


def test_a_log_rewritten_with_recomputed_hashes_is_caught_by_the_checkpoint(
    tmp_path: Path,
) -> None:
    originals = fill(tmp_path, 5)
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    forged, prev = [], GENESIS_HASH
    for event in originals:
        fields = {k: v for k, v in event.items() if k not in provenance.FILLED_KEYS}
        fields["patch_id"] = "rewritten" if event["seq"] == 1 else fields["patch_id"]
        chained = provenance.chain_event(fields, event["seq"], prev, event["timestamp"])
        forged.append(provenance.format_line(chained))
        prev = chained["hash"]
    rewrite(tmp_path, forged)  # same inode, same size: only the content differs
    assert verify_chain(str(tmp_path)).ok

    report = verify_chain(str(tmp_path), checkpoint)

    assert not report.resumed and [v.line_no for v in report.violations] == [5]


def test_a_deleted_log_is_a_violation_against_its_checkpoint(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    checkpoint = verify_chain(str(tmp_path)).checkpoint
    log_file(tmp_path).unlink()

    report = verify_chain(str(tmp_path), checkpoint)

    assert "missing" in report.full_check_reason and not report.ok


def test_checkpoint_survives_a_json_round_trip(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    text = lines(tmp_path)
    text[0] = text[0].replace(b'"p-0"', b'"p-V"')
    rewrite(tmp_path, text)
    checkpoint = verify_chain(str(tmp_path)).checkpoint

    stored = json.loads(json.dumps(checkpoint.to_dict()))

    assert ChainCheckpoint.from_dict(stored) == checkpoint
    with pytest.raises(PatchgateError):
        ChainCheckpoint.from_dict({"offset": 3})


# --- recording by hand -----------------------------------------------------------------------


def test_record_event_converts_command_line_strings(tmp_path: Path) -> None:
    event = record_event(
        str(tmp_path),
        {
            "event": "emergency_rollback",
            "operator": "jsmith",
            "last_good_commit": SHA2,
            "reason": "Critical production issue",
            "operator_confirmed": "yes",
        },
    )
    assert event["patch_id"] == "-" and event["operator_confirmed"] is True
    with pytest.raises(PatchgateError, match="torn_line"):
        record_event(str(tmp_path), {"event": "recovered", "torn_line": "x"})
    with pytest.raises(PatchgateError, match="unknown"):
        record_event(str(tmp_path), {"event": "oops"})
    assert verify_chain(str(tmp_path)).ok and len(read_events(str(tmp_path))) == 1


def test_module_command_line_checks_an_emergency_rollback_like_doit_record(
    tmp_path: Path,
) -> None:
    # Issue 12: the fallback recorder follows doit record's rules; an unchecked commit (here:
    # no live repository at all) is refused. tests/test_security.py records a checked one.
    argv = [sys.executable, "-m", "patchgate.provenance", "record", "event=emergency_rollback"]
    argv += ["operator=jsmith", f"last_good_commit={SHA2}", "reason=prod down, agent offline"]
    done = subprocess.run(argv, cwd=tmp_path, env=child_env(), capture_output=True, text=True)

    assert done.returncode == 1, done.stderr
    assert "STAGE: RECORD" in done.stderr and "needs last_good=" in done.stderr
    assert read_events(str(tmp_path)) == []

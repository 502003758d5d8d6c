"""doit watch: CI of landed commits on the fake GitHub -> confirmed, deduplicated proposals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, ProjectFactory, git, run_env
from doitcmd import doit_argv
from fakegithub import FakeGitHub, fake_github  # noqa: F401 - the fixture `github`
from patchgate import config, forge, provenance, watch
from patchgate.errors import PatchgateError

TOKEN_ENV = "PATCHGATE_TEST_FORGE_TOKEN"
TOKEN = "ghp_test_secret_token_5678"
SETTINGS = watch.WatchSettings(
    enabled=True, shadow=False, window_hours=24, interval=0, reruns=2, consecutive=3
)


def check(name: str, verdict: str, run_id: int | None = 1) -> forge.Check:
    conclusion = {"red": "failure", "green": "success", "pending": "in_progress"}[verdict]
    return forge.Check(name, verdict, conclusion, run_id, None, (run_id,) if run_id else ())


# --- the judgement, pure ---------------------------------------------------------------------


def test_a_single_red_with_a_green_parent_is_only_suspect() -> None:
    memory: dict[str, watch.CheckMemory] = {}
    v = watch.evaluate({"t": check("t", "red")}, {"t": check("t", "green")}, memory, SETTINGS)
    assert v.suspect == ("t",) and not v.confirmed


def test_a_red_rerun_confirms() -> None:
    memory: dict[str, watch.CheckMemory] = {}
    watch.evaluate({"t": check("t", "red", 1)}, {"t": check("t", "green")}, memory, SETTINGS)
    v = watch.evaluate({"t": check("t", "red", 2)}, {"t": check("t", "green")}, memory, SETTINGS)
    assert v.confirmed == ("t",)


def test_consecutive_red_polls_of_one_run_confirm_at_the_configured_count() -> None:
    memory: dict[str, watch.CheckMemory] = {}
    seen = [
        watch.evaluate({"t": check("t", "red", 1)}, {}, memory, SETTINGS).confirmed
        for _ in range(3)
    ]
    assert seen == [(), (), ("t",)]


def test_red_on_the_parent_too_is_broken_before() -> None:
    memory: dict[str, watch.CheckMemory] = {}
    for run in (1, 2, 3):
        v = watch.evaluate(
            {"t": check("t", "red", run)}, {"t": check("t", "red")}, memory, SETTINGS
        )
        assert v.broken_before == ("t",) and not v.confirmed and not v.suspect


def test_a_pending_parent_keeps_waiting() -> None:
    memory: dict[str, watch.CheckMemory] = {}
    v = watch.evaluate({"t": check("t", "red")}, {"t": check("t", "pending")}, memory, SETTINGS)
    assert v.waiting == ("t",) and not v.suspect


def test_a_check_that_flips_red_green_never_confirms() -> None:
    memory: dict[str, watch.CheckMemory] = {}
    parent = {"t": check("t", "green")}
    for run, verdict in enumerate(["red", "green", "red", "green", "red"], start=1):
        v = watch.evaluate({"t": check("t", verdict, run)}, parent, memory, SETTINGS)
        assert not v.confirmed


# --- against the fake forge and a real live repository ------------------------------------


def land(
    project: Project, text: str = "BROKEN\n", patch_id: str = "p-1", push: str = "OK"
) -> tuple[str, str]:
    """A commit on live recorded as landed (an apply event); returns (sha, parent)."""
    parent = git(project.live, "rev-parse", "HEAD")
    (project.live / "README.txt").write_text(text)
    git(project.live, "commit", "-qam", "patchgate: break the readme")
    sha = git(project.live, "rev-parse", "HEAD")
    provenance.append_event(
        str(project.path),
        {
            "event": "apply",
            "patch_id": patch_id,
            "commit_hash": sha,
            "operator_confirmed": False,
            "push": push,
            "files": ["README.txt"],
            "trigger": "doit promote",
            "base_sha": parent,
            "issue": "fix1",
        },
    )
    return sha, parent


@pytest.fixture
def watched(
    make_project: ProjectFactory, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> Project:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    github.token = TOKEN
    project = make_project(
        forge={
            "repository": "octo/calc",
            "api_url": github.url,
            "token_env": TOKEN_ENV,
            "retries": 1,
            "backoff": 0,
            "max_wait": 0,
            "tag_on_rollback": ["@octo/maintainers"],
        },
        watch={"interval": 0},
    )
    return project


def poll(project: Project) -> dict[str, Any]:
    log = str(project.path / "patches" / "logs" / "watch.log")
    return watch.run(str(project.path), True, log)["summary"]


def events(project: Project, kind: str) -> list[dict[str, Any]]:
    return [e for e in provenance.read_events(str(project.path)) if e["event"] == kind]


def state(project: Project, sha: str) -> dict[str, Any]:
    path = project.path / "patches" / ".state" / "watch" / f"{sha}.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_a_confirmed_red_proposes_once_with_the_rollback_plan_and_annotates_the_pr(
    watched: Project, github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    sha, parent = land(watched)
    github.add_pull(5, "alice", [sha])
    github.add_check_run(parent, "tests", "success")
    annotations = [{"path": "tests/test_ops.py", "start_line": 3, "title": "test_add failed"}]
    github.add_check_run(sha, "tests", "failure", annotations=annotations)
    assert poll(watched)["PROPOSED"] == "0"  # one red: unconfirmed
    assert not events(watched, "rollback_proposed") and not github.comments[5]
    github.add_check_run(sha, "tests", "failure", annotations=annotations)  # the re-run
    assert poll(watched)["PROPOSED"] == "1"
    [event] = events(watched, "rollback_proposed")
    assert event["sha"] == sha and event["source"] == "ci" and not event["shadow"]
    assert event["confirm"] == (
        f'doit rollback sha={sha} confirm={event["token"]} operator=NAME reason="…"'
    )
    assert event["failure"]["first_failing_test"] == "tests/test_ops.py:3: test_add failed"
    assert "ci: tests: failure (https://ci.invalid/" in event["failure_context"]
    out = capsys.readouterr().out
    assert f"CONFIRM: {event['confirm']}" in out and "ROLLBACK PROPOSED" in out
    [comment] = github.comments[5]
    assert event["confirm"] in comment["body"] and "@alice @octo/maintainers" in comment["body"]
    assert state(watched, sha)["state"] == "proposed"
    # the same plan doit rollback prints: its token
    plan = watched.run("rollback", f"sha={sha}")
    assert plan.summary["TOKEN"] == event["token"], plan.out
    # polled again: nothing new
    poll(watched)
    assert len(events(watched, "rollback_proposed")) == 1 and len(github.comments[5]) == 1
    status = watched.run("status")
    assert f"CONFIRM: {event['confirm']}" in status.out, status.out
    history = watched.run("history")
    assert f"{sha[:12]}  rollback proposed (ci)" in history.out, history.out
    assert TOKEN not in out + status.out + plan.out


def test_a_crash_after_the_event_before_the_state_never_duplicates(
    watched: Project, github: FakeGitHub
) -> None:
    sha, _ = land(watched)
    github.add_pull(5, "alice", [sha])
    for _ in range(2):
        github.add_check_run(sha, "tests", "failure")
    poll(watched)
    (watched.path / "patches" / ".state" / "watch" / f"{sha}.json").unlink()  # as if killed
    poll(watched)
    assert len(events(watched, "rollback_proposed")) == 1
    assert len(github.comments[5]) == 1 and state(watched, sha)["state"] == "proposed"


def test_shadow_mode_records_and_announces_nothing(watched: Project, github: FakeGitHub) -> None:
    watched.configure(watch={"shadow": True, "interval": 0})
    sha, _ = land(watched)
    github.add_pull(5, "alice", [sha])
    for _ in range(2):
        github.add_check_run(sha, "tests", "failure")
    poll(watched)
    [event] = events(watched, "rollback_proposed")
    assert event["shadow"] is True and not github.comments[5]


def test_the_breaker_opens_at_max_proposals_and_suppresses_the_next_red(
    watched: Project, github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    watched.configure(watch={"interval": 0, "max_proposals": 1, "proposal_window_hours": 6})
    first, _ = land(watched)
    for _ in range(2):
        github.add_check_run(first, "tests", "failure")
    assert poll(watched)["PROPOSED"] == "1"
    second, _ = land(watched, "BROKEN AGAIN\n", "p-2")
    github.add_pull(6, "bob", [second])
    for _ in range(2):  # confirmed: a red re-run of a check green (absent) on the parent
        github.add_check_run(second, "lint", "failure")
    summary = poll(watched)
    assert summary["SUPPRESSED"] == "1" and summary["WAITING"] == "0", summary
    [event] = events(watched, "rollback_proposed")  # only the first: no event, no comment
    assert event["sha"] == first and not github.comments[6]
    assert state(watched, second)["state"] == "suppressed"
    out = capsys.readouterr().out
    assert (
        f"watch: {second[:12]}: BREAKER OPEN: not proposed: ci: lint: failure" in out
        and "1 rollback proposal(s) in the last 6 h reached watch.max_proposals (1)" in out
        and f"plan the rollback by hand: doit rollback sha={second}" in out
    ), out
    poll(watched)  # terminal: polled again, still nothing
    assert len(events(watched, "rollback_proposed")) == 1 and not github.comments[6]
    status = watched.run("status")
    assert "rollback suppressed (breaker open: ci: lint: failure" in status.out, status.out
    assert f"): {second[:12]}\n  PLAN: doit rollback sha={second}" in status.out, status.out
    # the rate is per window: the proposal ages out of it; 0 sets no limit
    settings = watch.watch_settings(config.load(str(watched.path), cli={}))
    later = time.time() + 7 * 3600
    assert watch.breaker_open(str(watched.path), settings, time.time()) is not None
    assert watch.breaker_open(str(watched.path), settings, later) is None
    unlimited = watch.WatchSettings(**{**settings.__dict__, "max_proposals": 0})
    assert watch.breaker_open(str(watched.path), unlimited, time.time()) is None


def test_a_negative_max_proposals_is_refused(watched: Project) -> None:
    watched.configure(watch={"max_proposals": -1})
    res = watched.run("watch", "once=1")
    assert res.code != 0 and "max_proposals" in res.out, res.out


def test_the_circuit_breaker_polls_nothing(watched: Project, github: FakeGitHub) -> None:
    watched.configure(watch={"enabled": False})
    land(watched)
    log = str(watched.path / "watch.log")
    assert "disabled" in watch.run(str(watched.path), True, log)["summary"]["NOTE"]
    assert github.requests == []


def test_red_before_the_landing_is_not_blamed(watched: Project, github: FakeGitHub) -> None:
    sha, parent = land(watched)
    github.add_check_run(parent, "tests", "failure")
    for _ in range(3):
        github.add_check_run(sha, "tests", "failure")
        poll(watched)
    assert not events(watched, "rollback_proposed")
    assert state(watched, sha)["ci"] == "broken_before"


def test_green_ends_the_watch(watched: Project, github: FakeGitHub) -> None:
    sha, _ = land(watched)
    github.add_check_run(sha, "tests", "success")
    github.add_status(sha, "ci/lint", "success")
    summary = watch.run(str(watched.path), False, str(watched.path / "w.log"))["summary"]
    assert summary["WAITING"] == "0" and state(watched, sha)["state"] == "green"


def test_a_rate_limit_longer_than_the_window_is_inconclusive_never_a_proposal(
    watched: Project, github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    sha, _ = land(watched)
    for _ in range(3):
        github.add_check_run(sha, "tests", "failure")
    github.script("GET", "/check-runs$", 429, headers={"Retry-After": "86400"}, times=10)
    for _ in range(3):
        poll(watched)
    assert not events(watched, "rollback_proposed")
    st = state(watched, sha)
    assert st["errors"] == 3 and "rate-limits" in st["last_error"] and st["state"] == "watching"
    assert "inconclusive poll" in capsys.readouterr().out
    # A window of 3.6 µs: over by the time of any poll after the landing (no sleep, no race).
    watched.configure(watch={"window_hours": 1e-9, "interval": 0})
    poll(watched)
    assert state(watched, sha)["state"] == "expired" and not events(watched, "rollback_proposed")
    assert "CI window ended without a verdict (last forge error: the forge rate-limits" in (
        capsys.readouterr().out
    )
    assert poll(watched)["WATCHED"] == "0"


def test_a_forge_that_is_down_is_an_inconclusive_poll(
    watched: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = watched.config()
    cfg["forge"]["api_url"] = "http://127.0.0.1:9"
    watched.configure(**cfg)
    sha, _ = land(watched)
    poll(watched)
    assert state(watched, sha)["errors"] == 1
    assert "did not answer" in capsys.readouterr().out


def test_a_refused_token_is_one_line(watched: Project, github: FakeGitHub) -> None:
    github.token = "another"
    land(watched)
    with pytest.raises(PatchgateError) as err:
        poll(watched)
    assert "HTTP 401" in err.value.message and TOKEN not in err.value.message


def test_doit_watch_once_on_the_command_line(watched: Project, github: FakeGitHub) -> None:
    sha, _ = land(watched)
    for _ in range(2):
        github.add_check_run(sha, "tests", "failure")
    res = watched.run("watch", "once=1", env={TOKEN_ENV: TOKEN})
    assert res.code == 0 and res.summary["PROPOSED"] == "1", res.out
    assert TOKEN not in res.out
    bad = watched.run("watch", "once=maybe")
    assert bad.code != 0 and "once=maybe is not a yes/no value" in bad.out


def test_watch_state_files_are_json_under_the_state_folder(watched: Project) -> None:
    sha, _ = land(watched)
    poll(watched)
    folder = Path(watched.path / "patches" / ".state" / "watch")
    assert (folder / f"{sha}.json").exists() and (folder / "etags.json").exists()


def test_a_watch_killed_mid_poll_resumes_and_proposes_once(
    watched: Project, github: FakeGitHub
) -> None:
    sha, _ = land(watched)
    github.add_pull(5, "alice", [sha])
    github.add_check_run(sha, "tests", "failure")
    github.script("GET", "/check-runs$", 200, {}, delay=30, times=1)  # the poll hangs
    argv = doit_argv(watched.path, "watch")
    proc = subprocess.Popen(
        argv,
        env=run_env({TOKEN_ENV: TOKEN}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.endswith("/check-runs") for _, p, _ in github.requests):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    github.scripted.clear()
    github.add_check_run(sha, "tests", "failure")  # the re-run is red too
    res = watched.run("watch", "once=1", env={TOKEN_ENV: TOKEN})
    assert res.code == 0 and res.summary["PROPOSED"] == "1", res.out
    res = watched.run("watch", "once=1", env={TOKEN_ENV: TOKEN})
    assert res.code == 0 and res.summary["WATCHED"] == "1", res.out
    assert len(events(watched, "rollback_proposed")) == 1 and len(github.comments[5]) == 1


def test_a_commit_that_was_never_pushed_is_not_polled(watched: Project, github: FakeGitHub) -> None:
    sha, _ = land(watched, push="FAIL")
    poll(watched)
    assert state(watched, sha)["state"] == "not_pushed" and github.requests == []


@pytest.mark.parametrize(
    ("yaml_text", "line"),
    [
        (b"forge:\n  repository: calc\n", "forge.repository: 'calc' does not match"),
        (
            b"forge:\n  repository: o/c\n  token: x\n",
            "Additional properties are not allowed ('token' was unexpected)",
        ),
        (b"watch:\n  reruns: 1\n", "watch.reruns: 1 is less than the minimum of 2"),
        (b"landing: merge\n", "landing: 'merge' is not one of"),
    ],
)
def test_bad_forge_and_watch_keys_are_refused_by_the_schema(yaml_text: bytes, line: str) -> None:
    with pytest.raises(PatchgateError) as err:
        config.parse(yaml_text)
    assert line in err.value.message and err.value.stage == "CONFIG"


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"monitoring": {"enabled": True, "url": "http://127.0.0.1:1"}},
            "monitoring is enabled but query, stability_threshold are not set",
        ),
        ({}, "doit watch needs a forge (forge: repository OWNER/NAME in patchgate.yaml)"),
    ],
)
def test_watch_without_what_it_needs_is_one_line(
    make_project: ProjectFactory, settings: dict[str, Any], line: str
) -> None:
    project = make_project(**settings)
    res = project.run("watch", "once=1")
    assert res.code != 0 and line in res.summary["REASON"], res.out
    assert "Traceback" not in res.out


def test_a_check_flipping_red_green_on_reruns_never_proposes(
    watched: Project, github: FakeGitHub
) -> None:
    sha, _ = land(watched)
    ids = [github.add_check_run(sha, "tests", c) for c in ("failure", "success", "failure")]
    poll(watched)  # two red runs, but not in a row: only the last one counts
    assert state(watched, sha)["checks"]["tests"]["red_runs"] == [ids[2]]
    github.add_check_run(sha, "tests", "success")
    poll(watched)
    assert not events(watched, "rollback_proposed") and state(watched, sha)["state"] == "green"


def test_malformed_json_from_the_forge_is_an_inconclusive_poll(
    watched: Project, github: FakeGitHub
) -> None:
    sha, _ = land(watched)
    for _ in range(2):
        github.add_check_run(sha, "tests", "failure")
    github.script("GET", "/check-runs$", 200, b"<html>oops</html>", times=3)
    poll(watched)
    st = state(watched, sha)
    assert st["errors"] == 1 and "malformed JSON" in st["last_error"]
    assert not events(watched, "rollback_proposed")

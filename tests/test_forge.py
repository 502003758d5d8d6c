"""The forge client (tasks/forge.py) against the fake GitHub, checked by GitHub's OpenAPI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fakegithub import FakeGitHub, fake_github  # noqa: F401 - the fixture `github`
from patchgate import config, forge, proc

SHA = "a" * 40
PARENT = "b" * 40


def make(fake: FakeGitHub, sleeps: list[float] | None = None, **over: Any) -> forge.GitHub:
    values = {
        **forge.FORGE_DEFAULTS,
        "repository": f"{fake.owner}/{fake.name}",
        "api_url": fake.url,
        "backoff": 0.5,
        **over,
    }
    cfg = config.Config("/nonexistent", {"forge": values})
    settings = forge.settings(cfg)
    assert settings is not None
    waits = sleeps if sleeps is not None else []
    return forge.GitHub(settings, token=over.get("token", "tok-secret-1234"), sleep=waits.append)


def test_sticky_comment_is_created_once_then_updated_never_duplicated(github: FakeGitHub) -> None:
    github.add_issue(7)
    gh = make(github)
    first = gh.sticky_comment(7, "patch-x", "landed in abc")
    assert first[1] == "created"
    assert gh.sticky_comment(7, "patch-x", "landed in abc") == (first[0], "unchanged")
    # a rerun after a crash: a new client, nothing remembered locally, finds the same comment
    again = make(github).sticky_comment(7, "patch-x", "landed in def")
    assert again == (first[0], "updated")
    bodies = [c["body"] for c in github.comments[7]]
    assert len(bodies) == 1 and bodies[0].startswith("<!-- patchgate:patch-x -->\n")
    assert "landed in def" in bodies[0]
    # another purpose gets its own comment
    assert make(github).sticky_comment(7, "rollback-abc", "proposal")[1] == "created"
    assert len(github.comments[7]) == 2


def test_sticky_comment_finds_its_marker_beyond_the_first_page(github: FakeGitHub) -> None:
    github.add_issue(3)
    for _ in range(105):
        github.add_comment(3, "chatter")
    gh = make(github)
    gh.sticky_comment(3, "k", "mine")
    assert make(github).sticky_comment(3, "k", "mine")[1] == "unchanged"
    assert sum("patchgate:k" in c["body"] for c in github.comments[3]) == 1
    assert len(github.comments[3]) == 106


def test_token_is_a_header_and_is_redacted_from_every_message(github: FakeGitHub) -> None:
    github.add_issue(1)
    github.script("GET", r"/issues/1$", 422, {"message": "bad tok-secret-1234 here"})
    gh = make(github)
    with pytest.raises(forge.ForgeError) as err:
        gh.issue(1)
    assert "tok-secret-1234" not in err.value.message and "***" in err.value.message
    gh.sticky_comment(1, "k", "the token tok-secret-1234 leaked into a body")
    assert "tok-secret-1234" not in github.comments[1][0]["body"]


def test_401_names_the_token_variable_not_the_token(github: FakeGitHub) -> None:
    github.token = "the-right-one"
    with pytest.raises(forge.ForgeError) as err:
        make(github).combined_status(SHA)
    assert err.value.status == 401 and "GITHUB_TOKEN" in err.value.message
    assert "tok-secret-1234" not in err.value.message and not err.value.transient


def test_404_names_the_repository(github: FakeGitHub) -> None:
    with pytest.raises(forge.ForgeError) as err:
        make(github, repository="octo/nope").combined_status(SHA)
    assert err.value.status == 404 and "octo/nope" in err.value.message


def test_rate_limit_with_retry_after_waits_then_succeeds(github: FakeGitHub) -> None:
    github.script("GET", "/status$", 429, headers={"Retry-After": "7"})
    sleeps: list[float] = []
    data = make(github, sleeps).combined_status(SHA)
    assert data["state"] == "pending" and sleeps == [7.0]


def test_rate_limit_reset_header_is_waited_for(github: FakeGitHub) -> None:
    reset = str(int(time.time()) + 30)
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    github.script("GET", "/status$", 403, {"message": "API rate limit exceeded"}, headers)
    sleeps: list[float] = []
    make(github, sleeps).combined_status(SHA)
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 32


def test_rate_limited_longer_than_max_wait_is_one_transient_line(github: FakeGitHub) -> None:
    github.script("GET", "/status$", 429, headers={"Retry-After": "3600"})
    sleeps: list[float] = []
    with pytest.raises(forge.ForgeError) as err:
        make(github, sleeps, max_wait=60).combined_status(SHA)
    assert err.value.transient and "forge.max_wait" in err.value.message
    assert "\n" not in err.value.message and sleeps == []


def test_5xx_is_retried_with_backoff_then_succeeds(github: FakeGitHub) -> None:
    github.script("GET", "/status$", 502, times=2)
    sleeps: list[float] = []
    assert make(github, sleeps).combined_status(SHA)["sha"] == SHA
    assert sleeps == [0.5, 1.0]


def test_5xx_for_longer_than_the_retries_is_one_transient_line(github: FakeGitHub) -> None:
    github.script("GET", "/status$", 503, times=10)
    sleeps: list[float] = []
    with pytest.raises(forge.ForgeError) as err:
        make(github, sleeps, retries=2).combined_status(SHA)
    assert err.value.transient and "HTTP 503 3 times" in err.value.message
    assert len(sleeps) == 2


def test_malformed_json_is_one_line(github: FakeGitHub) -> None:
    github.script("GET", "/status$", 200, b"<html>not json")
    with pytest.raises(forge.ForgeError) as err:
        make(github).combined_status(SHA)
    assert "malformed JSON" in err.value.message


def test_a_forge_that_is_down_is_one_transient_line() -> None:
    fake = FakeGitHub("octo", "calc")
    fake.url = "http://127.0.0.1:9"  # discard port: nothing listens
    sleeps: list[float] = []
    with pytest.raises(forge.ForgeError) as err:
        make(fake, sleeps, retries=1).combined_status(SHA)
    assert err.value.transient and "did not answer" in err.value.message and len(sleeps) == 1


def test_a_hanging_forge_times_out(github: FakeGitHub) -> None:
    github.script("GET", "/status$", 200, {}, delay=1.0, times=5)
    with pytest.raises(forge.ForgeError) as err:
        make(github, retries=0, timeout=0.2).combined_status(SHA)
    assert "ReadTimeout" in err.value.message


def test_polling_uses_etags(github: FakeGitHub) -> None:
    github.add_check_run(SHA, "tests", "success")
    gh = make(github)
    first = forge.checks_of(gh, SHA)
    second = forge.checks_of(gh, SHA)
    assert first == second and github.not_modified == 2
    github.add_check_run(SHA, "tests", "failure")
    assert forge.checks_of(gh, SHA)["tests"].verdict == "red"


def test_checks_merge_runs_and_statuses_and_skip_our_own_status(github: FakeGitHub) -> None:
    github.add_check_run(SHA, "tests", "failure")
    rerun = github.add_check_run(SHA, "tests", "success")
    github.add_check_run(SHA, "lint", None, status="in_progress")
    github.add_status(SHA, "ci/legacy", "error", "https://ci.invalid/1")
    gh = make(github)
    gh.set_status(SHA, "success", "landed", None)
    checks = forge.checks_of(gh, SHA)
    assert set(checks) == {"tests", "lint", "ci/legacy"}
    assert checks["tests"].verdict == "green" and checks["tests"].run_id == rerun
    assert len(checks["tests"].runs) == 2
    assert checks["lint"].verdict == "pending"
    assert checks["ci/legacy"].verdict == "red"
    assert github.statuses[SHA][0]["context"] == "patchgate"


def test_first_failing_test_comes_from_the_annotations(github: FakeGitHub) -> None:
    github.add_check_run(
        SHA,
        "tests",
        "failure",
        annotations=[
            {"annotation_level": "warning", "path": "a.py", "title": "slow", "message": "m"},
            {
                "annotation_level": "failure",
                "path": "tests/test_ops.py",
                "start_line": 4,
                "title": "test_add failed",
                "message": "assert 5 == 6",
            },
        ],
    )
    gh = make(github)
    check = forge.checks_of(gh, SHA)["tests"]
    assert forge.first_failing_test(gh, check) == "tests/test_ops.py:4: test_add failed"


def test_the_fake_refuses_a_request_github_would_refuse(github: FakeGitHub) -> None:
    gh = make(github)
    with pytest.raises(forge.ForgeError):
        gh.request("POST", gh.repo_path(f"/statuses/{SHA}"), body={"state": "bogus"})
    assert any("bogus" in p for p in github.problems)
    github.problems.clear()


@pytest.mark.parametrize(
    ("raw", "number"),
    [("github:12", 12), ("#3", 3), ("gh:4", 4), ("github:x", None), ("12", None), ("", None)],
)
def test_trigger_values(raw: str, number: int | None) -> None:
    assert forge.parse_trigger(raw) == number


def test_a_repository_without_owner_is_refused() -> None:
    cfg = config.Config("/x", {"forge": {"repository": "calc"}})
    with pytest.raises(Exception, match="OWNER/NAME"):
        forge.settings(cfg)


def test_the_forge_token_never_reaches_a_jail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHGATE_FORGE_TOKEN", "tok-secret-1234")
    monkeypatch.setenv("GITHUB_TOKEN", "tok-secret-1234")
    assert "tok-secret-1234" not in proc.clean_env().values()


def test_saved_etags_are_bounded_and_read_back(github: FakeGitHub, tmp_path: Path) -> None:
    gh = make(github)
    for i in range(forge.MAX_ETAGS + 50):
        gh.etags[f"/k{i}"] = forge._Cached(f'W/"{i}"', {"i": i})
    path = str(tmp_path / "etags.json")
    forge.save_etags(gh, path)
    again = make(github)
    forge.load_etags(again, path)
    assert len(again.etags) == forge.MAX_ETAGS and "/k49" not in again.etags
    assert again.etags[f"/k{forge.MAX_ETAGS + 49}"].data == {"i": forge.MAX_ETAGS + 49}
    (tmp_path / "etags.json").write_text("{not json")
    broken = make(github)
    forge.load_etags(broken, path)  # a damaged cache is only a slower first poll
    assert broken.etags == {}


def test_the_demo_fake_without_the_description_serves_what_patchgate_reads() -> None:
    """An installed patchgate has no tests/data: ``doit demo`` runs the fake without the
    OpenAPI description; the client's reads and writes still work end to end."""
    from patchgate.fakegithub import FakeGitHub as Bare

    with Bare("octo", "calc") as bare:
        bare.add_issue(7)
        bare.add_pull(5, "alice", [SHA])
        bare.add_check_run(PARENT, "tests", "success")
        bare.add_check_run(SHA, "tests", "failure", annotations=[{"path": "t.py", "title": "x"}])
        bare.add_status(SHA, "ci/legacy", "error")
        gh = make(bare)  # type: ignore[arg-type]
        checks = forge.checks_of(gh, SHA)
        assert checks["tests"].verdict == "red" and checks["ci/legacy"].verdict == "red"
        assert forge.first_failing_test(gh, checks["tests"]) == "t.py:1: x"
        assert forge.pull_authors(gh, SHA) == [(5, "alice")]
        assert gh.sticky_comment(7, "k", "one")[1] == "created"
        assert gh.sticky_comment(7, "k", "two")[1] == "updated"
        assert [c["body"] for c in bare.comments[7]] == ["<!-- patchgate:k -->\ntwo"]
        gh.close()
        assert bare.problems == []
    with pytest.raises(forge.ForgeError, match="did not answer"):
        make(bare, retries=0).combined_status(SHA)  # stopped: nothing listens any more

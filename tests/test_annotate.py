"""The whole story on the fake forge: land with trigger=, go red, propose, confirm, annotate."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ADD_MUL, Project, ProjectFactory, git
from fakegithub import FakeGitHub, fake_github  # noqa: F401 - the fixture `github`
from patchgate import forge
from test_promote import add_remote, events, verified

TOKEN_ENV = "PATCHGATE_TEST_FORGE_TOKEN"
TOKEN = "ghp_annotate_secret_9999"
ENV = {TOKEN_ENV: TOKEN}


@pytest.fixture
def forge_project(make_project: ProjectFactory, github: FakeGitHub) -> tuple[Project, Path]:
    project = make_project(
        forge={
            "repository": "octo/calc",
            "api_url": github.url,
            "token_env": TOKEN_ENV,
            "retries": 0,
            "backoff": 0,
            "tag_on_rollback": ["@octo/maintainers"],
        },
        watch={"interval": 0},
    )
    bare = add_remote(project)
    github.remote = bare
    github.token = TOKEN
    github.add_issue(12, "mul is missing")
    return project, bare


def test_landing_red_ci_proposal_confirmed_rollback_each_annotated_once(
    forge_project: tuple[Project, Path], github: FakeGitHub
) -> None:
    project, _ = forge_project
    verified(project)
    res = project.run("promote", "issue=add_mul", "trigger=github:12", env=ENV)
    assert res.code == 0, res.out
    commit = res.summary["COMMIT"]
    assert github.branch_sha("main") == commit  # the push went to the real bare remote
    [landed] = github.comments[12]
    assert "<!-- patchgate:patch-add_mul -->" in landed["body"]
    assert f"`{commit}`" in landed["body"] and "push OK" in landed["body"]
    assert "gate verdicts" in landed["body"]
    assert github.statuses[commit][0]["context"] == "patchgate"
    # CI goes red twice on the landed commit, which came from PR #5 by alice
    github.add_pull(5, "alice", [commit])
    github.add_check_run(commit, "tests", "failure")
    res = project.run("watch", "once=1", env=ENV)
    assert res.summary["PROPOSED"] == "0", res.out
    github.add_check_run(commit, "tests", "failure")
    res = project.run("watch", "once=1", env=ENV)
    assert res.summary["PROPOSED"] == "1", res.out
    [proposal] = events(project, "rollback_proposed")
    [on_pr] = github.comments[5]
    assert str(proposal["confirm"]) in on_pr["body"] and "@alice @octo/maintainers" in on_pr["body"]
    assert any(str(proposal["confirm"]) in c["body"] for c in github.comments[12])
    # the operator runs the CONFIRM line
    confirm = str(proposal["confirm"]).split()[3]
    res = project.run(
        "rollback", f"sha={commit}", confirm, "operator=ops", "reason=CI red", env=ENV
    )
    assert res.code == 0, res.out
    revert = res.summary["COMMIT"]
    [on_pr] = github.comments[5]  # the same comment, updated
    assert f"rolled back `{commit}`** in `{revert}`" in on_pr["body"]
    assert "confirmed by ops" in on_pr["body"] and "@alice" in on_pr["body"]
    assert "- failure: ci: tests: failure (https://ci.invalid/" in on_pr["body"]  # the proposal's
    assert len(github.comments[12]) == 2  # the landing and the rollback, one each
    assert TOKEN not in res.out
    status = project.run("status")
    assert "CONFIRM" not in status.out  # rolled back: no longer open


def test_a_forge_that_is_down_never_fails_a_landing(
    forge_project: tuple[Project, Path], github: FakeGitHub
) -> None:
    project, _ = forge_project
    cfg = project.config()
    cfg["forge"]["api_url"] = "http://127.0.0.1:9"
    project.configure(**cfg)
    verified(project)
    res = project.run("promote", "issue=add_mul", "trigger=github:12", env=ENV)
    assert res.code == 0 and res.summary["PUSH"] == "OK", res.out
    assert "WARNING: forge: the landing of" in res.out and "did not answer" in res.out
    assert github.comments[12] == []


def test_a_trigger_that_is_not_a_forge_issue_warns_and_lands(
    forge_project: tuple[Project, Path], github: FakeGitHub
) -> None:
    project, _ = forge_project
    verified(project)
    res = project.run("promote", "issue=add_mul", "trigger=jira:12", env=ENV)
    assert res.code == 0, res.out
    assert "trigger=jira:12 is not github:NUMBER" in res.out
    assert github.comments[12] == []


def test_no_forge_configured_changes_nothing(make_project: ProjectFactory) -> None:
    project = make_project()
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    res = project.run("promote", "issue=add_mul")
    assert res.code == 0 and "forge" not in res.out.lower(), res.out
    landings = project.path / "patches" / ".state" / "forge" / "landings"
    assert [p.name for p in landings.iterdir()] == [
        f"{git(project.live, 'rev-parse', 'HEAD')}.json"
    ]


def test_landing_by_pull_request_pushes_a_branch_and_opens_a_pr(
    forge_project: tuple[Project, Path], github: FakeGitHub
) -> None:
    project, bare = forge_project
    project.configure(landing="pull_request")
    before = git(bare, "rev-parse", "main")
    verified(project)
    res = project.run("promote", "issue=add_mul", "trigger=github:12", env=ENV)
    assert res.code == 0 and res.summary["PUSH"] == "OK", res.out
    commit = res.summary["COMMIT"]
    assert git(bare, "rev-parse", "main") == before  # the merge is the forge's
    assert github.branch_sha("patchgate/add_mul") == commit
    [number] = [n for n, p in github.pulls.items() if p["head"]["ref"] == "patchgate/add_mul"]
    pull = github.pulls[number]
    assert pull["base"]["ref"] == "main" and "gate verdicts" in pull["body"]
    assert f"`{commit}`" in pull["body"]
    [event] = events(project, "pull_request")
    assert event["pull_request"] == number and event["commit_hash"] == commit
    assert f"pull request: #{number}" in github.comments[12][0]["body"]
    history = project.run("history")
    assert f"pull request #{number} (patchgate/add_mul -> main)" in history.out, history.out


def test_a_pull_request_is_updated_not_opened_twice(github: FakeGitHub, tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "a").write_text("a\n")
    git(work, "add", "a")
    git(work, "-c", "user.name=x", "-c", "user.email=x@x.invalid", "commit", "-qm", "a")
    git(work, "push", "-q", str(bare), "main:refs/heads/patchgate/x")
    github.remote = bare
    settings = forge.ForgeSettings(
        "github", "octo", "calc", github.url, "NONE", 5, 0, 0, 0, (), True, "patchgate"
    )
    gh = forge.GitHub(settings, token="t0ken-abcd")
    first, how = gh.open_pull("patchgate/x", "main", "t", "one")
    assert how == "created"
    second, how = gh.open_pull("patchgate/x", "main", "t", "two")
    assert how == "updated" and second["number"] == first["number"]
    assert github.pulls[first["number"]]["body"] == "two" and len(github.pulls) == 1


def test_proposals_cannot_be_recorded_by_hand(make_project: ProjectFactory) -> None:
    project = make_project()
    res = project.run("record", "event=rollback_proposed")
    assert res.code != 0 and "written by doit watch" in res.out, res.out


def test_a_token_that_may_not_set_statuses_still_comments_and_lands(
    forge_project: tuple[Project, Path], github: FakeGitHub
) -> None:
    project, _ = forge_project
    github.script("POST", "/statuses/", 403, {"message": "Resource not accessible"})
    verified(project)
    res = project.run("promote", "issue=add_mul", "trigger=github:12", env=ENV)
    assert res.code == 0, res.out
    assert "WARNING: forge: no commit status on" in res.out
    assert len(github.comments[12]) == 1 and github.statuses == {}


def test_trigger_given_at_verify_is_annotated_then_carried_to_the_landing(
    forge_project: tuple[Project, Path], github: FakeGitHub
) -> None:
    project, _ = forge_project
    patch = project.patch("add_mul.py", ADD_MUL)
    res = project.run("verify", f"patch={patch}", "trigger=github:12", env=ENV)
    assert res.code == 0, res.out
    [comment] = github.comments[12]
    assert "verified patch `add_mul@" in comment["body"] and "pass" in comment["body"]
    res = project.run("promote", "issue=add_mul", env=ENV)  # no trigger= this time
    assert res.code == 0, res.out
    [comment] = github.comments[12]  # the same comment, now saying it landed
    assert f"`{res.summary['COMMIT']}`" in comment["body"]
    assert "landed patch" in comment["body"]

"""doit propose with trigger=github:N (issues 14 and 15): the triggering issue's one sticky
comment follows the patch from proposed (each attempt's verdict, the confidence) to landed."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from conftest import ProjectFactory
from fakegithub import FakeGitHub, fake_github  # noqa: F401 - the fixture `github`
from patchgate import forge
from patchgate.fakellm import FakeLLM, Step
from test_propose import (  # noqa: F401 - the fixtures `fake`, `model`
    BROKEN_ADD,
    GOOD,
    PYTEST_GATE,
    REQUEST,
    answer,
    configure,
    events,
    fake,
    model,
)

TOKEN_ENV = "PATCHGATE_TEST_FORGE_TOKEN"
TOKEN = "ghp_propose_secret_4242"
ENV = {TOKEN_ENV: TOKEN}


def forge_section(github: FakeGitHub) -> dict[str, Any]:
    github.token = TOKEN
    github.add_issue(12, "mul is missing")
    return {
        "repository": "octo/calc",
        "api_url": github.url,
        "token_env": TOKEN_ENV,
        "retries": 0,
        "backoff": 0,
    }


def test_a_proposal_is_annotated_on_its_trigger_issue_then_the_landing(
    make_project: ProjectFactory,
    model: FakeLLM,  # noqa: F811 - the fixture
    github: FakeGitHub,
) -> None:
    project = make_project(forge=forge_section(github))
    configure(project, model, gates=[PYTEST_GATE])
    model.script(Step.reply(answer(BROKEN_ADD, score=0.4)), Step.reply(answer(GOOD, score=0.9)))
    res = project.run("propose", "issue=mul", f"request={REQUEST}", "trigger=github:12", env=ENV)
    assert res.code == 0, res.out
    [comment] = github.comments[12]  # one comment: each child verify, then propose, edited it
    body = comment["body"]
    passed = events(project, "verify_pass")[-1]["patch_id"]
    assert body.startswith("<!-- patchgate:patch-mul -->")
    assert f"proposed patch `{passed}`** (issue `mul`, model `fake-model`)" in body
    assert "- confidence: 0.9" in body and "- gate verdicts: pytest: pass" in body
    assert "- attempt 1: GATES: pytest" in body and "- attempt 2: pass" in body
    assert "doit promote issue=mul" in body
    assert len(github.posted("POST", r"/issues/12/comments$")) == 1
    assert len(github.posted("PATCH", r"/issues/comments/")) == 2  # verify a2, propose
    assert TOKEN not in res.out
    # promote needs no trigger= again: the proposal's is remembered; the same comment lands
    landed = project.run("promote", "issue=mul", env=ENV)
    assert landed.code == 0, landed.out
    [comment] = github.comments[12]
    assert f"landed patch `{passed}`" in comment["body"]
    assert f"`{landed.summary['COMMIT']}`" in comment["body"]
    assert "- confidence: 0.9" in comment["body"]


def test_a_proposal_that_never_passes_says_so_and_a_free_text_trigger_sends_nothing(
    make_project: ProjectFactory,
    model: FakeLLM,  # noqa: F811 - the fixture
    github: FakeGitHub,
) -> None:
    project = make_project(forge=forge_section(github))
    configure(project, model, gates=[PYTEST_GATE], max_retries=1)
    model.script(Step.reply(answer(BROKEN_ADD, score=0.3)))
    res = project.run("propose", "issue=mul", f"request={REQUEST}", "trigger=github:12", env=ENV)
    assert res.code != 0 and res.summary["STAGE"] == "REFINE", res.out
    [comment] = github.comments[12]
    assert "could not propose a passing patch** (issue `mul`" in comment["body"]
    assert "waiting for an operator" in comment["body"]
    assert "- attempt 1: GATES: pytest" in comment["body"]
    # trigger= as free text (the Triggered-by trailer) is not a forge issue: nothing is sent
    sent = len(github.requests)
    model.script(Step.reply(answer(GOOD, score=0.8)))
    again = f"request={REQUEST}, typed"  # another request: the model is asked again
    res = project.run("propose", "issue=mul2", again, "trigger=ticket 9", env=ENV)
    assert res.code == 0, res.out
    assert len(github.requests) == sent and "WARNING: forge" not in res.out


def test_a_forge_that_is_down_never_fails_a_proposal(
    make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    project = make_project(
        forge={"repository": "octo/calc", "api_url": dead, "retries": 0, "backoff": 0}
    )
    state = {"state": "passed", "model": "m", "attempts": [{"n": 1, "verdict": "pass"}]}
    forge.after_propose(str(project.path), "mul", "github:12", state, None)  # does not raise
    out = capsys.readouterr().out
    assert out.startswith("WARNING: forge: the proposal of mul was not annotated: the forge at")
    assert len(out.splitlines()) == 1
    # remembered all the same: the landing will try issue 12 again
    assert forge.trigger_of(str(project.path), "mul", None) == 12

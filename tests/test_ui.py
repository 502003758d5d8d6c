"""doit ui, the operator console: every route and every refusal, over HTTP (FastAPI TestClient).

One project is verified once for the module (a real ``doit verify`` of four patches: one that
passes, one named like an attack, one that fails, one edited afterwards); the tests that land
or roll back work on projects of their own, through the same doit commands the console runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADD_MUL, DODO, Project, ProjectFactory, git, run_env, script
from doitcmd import doit_argv
from fastapi.testclient import TestClient
from patchgate import lock, provenance
from patchgate.errors import PatchgateError
from patchgate.ui import auth, records
from patchgate.ui.app import COOKIE, create_app
from patchgate.ui.auth import Settings

TOKEN = "test-login-token-0123456789"
XSS_NAME = "<script>alert(1)</script>.py"
GATES = [
    {
        "name": "compile",
        "command": [
            "{python}",
            "-c",
            "import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]",
            "{files}",
        ],
        "files": ["*.py"],
    }
]
XSS_PATCH = script(
    [XSS_NAME],
    f"p = Path({XSS_NAME!r})\np.parent.mkdir(parents=True, exist_ok=True)\n"
    'p.write_text("X = 1\\n")',
)
BAD_PATCH = script(["calc/ops.py"], 'Path("calc/ops.py").write_text("def broken(:\\n")')
STALE_PATCH = script(["README.txt"], 'Path("README.txt").write_text("calc, edited\\n")')
JOB_TIMEOUT = 180


def new_project(base: Path, template: Path, **config: Any) -> Project:
    path = base / "project"
    live = path / "live"
    shutil.copytree(template, live, symlinks=True)
    (path / "patches").mkdir()
    project = Project(path, live)
    project.configure(live_repo="live", gates=GATES, **config)
    return project


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Project:
    """Four workspaces from one real doit verify: good (pass), xss (pass), bad (fail), stale."""
    project = new_project(tmp_path_factory.mktemp("ui"), calc_template)
    names = {"good": ADD_MUL, "xss": XSS_PATCH, "bad": BAD_PATCH, "stale": STALE_PATCH}
    paths = [project.patch(f"{name}.py", text) for name, text in names.items()]
    done = project.run("verify", "patch=" + ",".join(paths))
    assert done.code != 0, done.out  # bad fails; the others pass
    for name in ("good", "xss", "stale"):
        result = json.loads((project.ws(name) / "result.json").read_text())
        assert result["verification_status"] == "pass", done.out
    project.patch("stale.py", STALE_PATCH + "# edited after verification\n")
    return project


def login(client: TestClient, secret: str = TOKEN, name: str = "") -> str:
    """Log in through the form; the session's CSRF token."""
    form = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce, form.text
    done = client.post(
        "/login",
        data={"secret": secret, "name": name, "csrf": nonce.group(1)},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    return csrf_of(client.get("/").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def console(project: Project, **settings: Any) -> TestClient:
    values: dict[str, Any] = {"token_operator": "tester", **settings}
    return TestClient(create_app(str(project.path), Settings(**values), str(DODO), TOKEN))


@pytest.fixture
def client(verified: Project) -> Iterator[TestClient]:
    with console(verified) as c:
        yield c


@pytest.fixture
def logged_in(client: TestClient) -> tuple[TestClient, str]:
    return client, login(client)


def finished(client: TestClient, response: Any) -> Any:
    """The job a POST started (it redirects to the job page), waited for."""
    assert response.status_code == 303, response.text
    job_id = response.headers["location"].rsplit("/", 1)[1]
    job = client.app.state.jobs.get(job_id)  # type: ignore[attr-defined]
    assert job.wait(JOB_TIMEOUT), job.output()
    return job


# --- login ------------------------------------------------------------------------------------


def test_pages_redirect_to_login_without_a_session(client: TestClient) -> None:
    for path in ("/", "/issue/good", "/history", "/audit", "/jobs"):
        done = client.get(path, follow_redirects=False)
        assert (done.status_code, done.headers["location"]) == (303, "/login"), path


def test_actions_without_a_session_are_refused(client: TestClient) -> None:
    for path in (
        "/issue/good/promote",
        "/issue/good/verify",
        "/rollback/prepare",
        "/rollback/confirm",
        "/audit/run",
        "/logout",
    ):
        done = client.post(path, data={"csrf": "x"})
        assert done.status_code == 401, path
        assert "log in first" in done.text
    assert client.app.state.jobs.all() == []  # type: ignore[attr-defined]


def test_a_wrong_token_does_not_log_in(client: TestClient) -> None:
    form = client.get("/login")
    done = client.post("/login", data={"secret": "guess", "csrf": csrf_of(form.text)})
    assert done.status_code == 401
    assert "wrong token" in done.text
    assert COOKIE not in client.cookies


def test_a_login_without_the_forms_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/login")
    done = client.post("/login", data={"secret": TOKEN, "csrf": "forged"})
    assert done.status_code == 403
    assert COOKIE not in client.cookies


def test_the_token_logs_in_as_the_configured_identity(logged_in: tuple[TestClient, str]) -> None:
    client, _ = logged_in
    assert "operator <strong>tester</strong>" in client.get("/").text


def test_configured_operator_logs_in_with_the_password_and_not_without(verified: Project) -> None:
    hashed = auth.hash_password("correct horse")
    with console(verified, operators={"alice": hashed}, print_token=False) as c:
        form = c.get("/login")
        assert "login token" not in form.text  # print_token off: no token form
        nonce = csrf_of(form.text)
        bad = c.post("/login", data={"name": "alice", "secret": "wrong", "csrf": nonce})
        assert bad.status_code == 401
        token = c.post("/login", data={"secret": TOKEN, "csrf": nonce})
        assert token.status_code == 401  # the printed token is off
        good = c.post("/login", data={"name": "alice", "secret": "correct horse", "csrf": nonce})
        assert good.status_code == 200 and "operator <strong>alice</strong>" in good.text


def test_logout_ends_the_session(logged_in: tuple[TestClient, str]) -> None:
    client, csrf = logged_in
    assert client.post("/logout", data={"csrf": "wrong"}).status_code == 403
    done = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_password_hashes_are_scrypt_and_salted() -> None:
    first, second = auth.hash_password("pw-12345"), auth.hash_password("pw-12345")
    assert first.startswith("scrypt$") and first != second
    assert auth.check_password(first, "pw-12345")
    assert not auth.check_password(first, "pw-12346")
    assert not auth.check_password("plain-text", "plain-text")


def test_the_hash_helper_prints_a_line_to_paste(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["long enough", "long enough", "long enough", "different!"])
    monkeypatch.setattr(auth.getpass, "getpass", lambda prompt: next(answers))
    assert auth.main(["alice"]) == 0
    hashed = capsys.readouterr().out.split("alice: ")[1].strip()
    assert auth.check_password(hashed, "long enough")
    assert auth.main(["alice"]) == 1  # the two passwords differ
    assert "passwords differ" in capsys.readouterr().err


def test_a_project_whose_live_repository_is_gone_shows_why(make_project: ProjectFactory) -> None:
    project = make_project()
    shutil.rmtree(project.live)
    with console(project) as client:
        form = client.get("/login")
        client.post("/login", data={"secret": TOKEN, "csrf": csrf_of(form.text)})
        done = client.get("/")
    assert done.status_code == 500
    assert str(project.live) in done.text and "Traceback" not in done.text


def test_settings_refuse_a_plain_password_and_a_console_nobody_can_enter() -> None:
    with pytest.raises(PatchgateError, match="not a password hash"):
        auth.settings_from({"operators": {"bob": "hunter2"}}, None)
    with pytest.raises(PatchgateError, match="nobody could log in"):
        auth.settings_from({"print_token": False}, None)
    settings = auth.settings_from({"port": 9000}, "ops")
    assert (settings.host, settings.port, settings.token_operator) == ("127.0.0.1", 9000, "ops")
    assert settings.loopback and not auth.settings_from({"host": "0.0.0.0"}, None).loopback


# --- review -----------------------------------------------------------------------------------


def test_review_lists_every_workspace_with_verdict_stale_attempt(
    logged_in: tuple[TestClient, str],
) -> None:
    client, _ = logged_in
    rows = {r.issue: r for r in records.workspaces(client.app.state.root)}  # type: ignore[attr-defined]
    assert {k: (r.verdict, r.stale) for k, r in rows.items()} == {
        "bad": ("fail", False),
        "good": ("pass", False),
        "stale": ("pass", True),
        "xss": ("pass", False),
    }
    page = client.get("/").text
    assert "stale: patch edited" in page
    assert page.count('href="/issue/good/promote"') == 1
    assert 'href="/issue/stale/promote"' not in page
    assert 'href="/issue/bad/promote"' not in page


def test_issue_page_shows_diff_gates_scope_result_and_logs(
    logged_in: tuple[TestClient, str],
) -> None:
    client, _ = logged_in
    page = client.get("/issue/good").text
    assert "+def mul(a: int, b: int) -&gt; int:" in page  # the diff, escaped
    assert "base to the verified tree" in page
    assert re.search(r"<td>compile</td>\s*<td><span class=\"verdict pass\">", page)
    assert "gate compile:" in page  # the gate's part of the run log
    assert "&#34;verification_status&#34;: &#34;pass&#34;" in page  # result.json, escaped
    bad = client.get("/issue/bad").text
    assert "verdict fail" in bad and "SyntaxError: invalid syntax" in bad


def test_a_workspace_verified_on_a_cluster_names_the_worker(
    logged_in: tuple[TestClient, str], verified: Project
) -> None:
    client, _ = logged_in
    path = verified.ws("xss") / "result.json"
    original = path.read_text()
    result = json.loads(original)
    result["verified_by"] = {"executor": "dask", "worker": "tcp://127.0.0.1:40001"}
    path.write_text(json.dumps(result))
    try:
        page = client.get("/issue/xss").text
        assert "<dt>verified by</dt><dd>dask tcp://127.0.0.1:40001</dd>" in page
    finally:
        path.write_text(original)
    assert "verified by" not in client.get("/issue/xss").text


def test_file_names_show_as_text_never_as_markup(logged_in: tuple[TestClient, str]) -> None:
    client, _ = logged_in
    for path in ("/issue/xss", "/issue/xss/promote"):
        page = client.get(path).text
        assert "<script>alert(1)</script>" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;.py" in page, path
    headers = client.get("/issue/xss").headers
    assert "script-src 'self'" in headers["content-security-policy"]


def test_logs_are_paged(logged_in: tuple[TestClient, str], verified: Project) -> None:
    client, _ = logged_in
    name = records.issue_logs(str(verified.path), "good")[-1].name
    big = verified.path / "patches" / "logs" / name.replace("_issue_good", "0_issue_good")
    big.write_text("".join(f"line {i}\n" for i in range(1, 1001)))
    try:
        first = client.get(f"/issue/good/log/{big.name}").text
        assert "page 1 of 3" in first and "line 400<" in first and "line 401" not in first
        last = client.get(f"/issue/good/log/{big.name}?page_no=3").text
        assert "line 1000" in last and "line 800\n" not in last and "line 801\n" in last
    finally:
        big.unlink()


def test_unknown_issue_log_and_job_are_refused(logged_in: tuple[TestClient, str]) -> None:
    client, _ = logged_in
    assert client.get("/issue/nope").status_code == 404
    assert client.get("/issue/good/log/..%2F..%2Fpatchgate.yaml").status_code == 404
    assert client.get("/issue/good/log/other.log").status_code == 404
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs/nope/status").status_code == 404


def test_proposals_show_attempts_and_wait_for_an_operator(
    logged_in: tuple[TestClient, str], verified: Project
) -> None:
    client, _ = logged_in
    propose = verified.ws("bad") / "propose.json"
    propose.write_text(
        json.dumps(
            {
                "issue": "bad",
                "request_sha256": "0" * 64,
                "state": "waiting_operator",
                "attempts": [
                    {
                        "n": 1,
                        "patch": "patches/bad.py",
                        "stage": "GATES",
                        "reason": "compile: invalid syntax",
                        "confidence_score": 0.42,
                        "feedback": "<b>fix the syntax</b>",
                        "verdict": "fail",
                    }
                ],
                "model": "smollm2",
                "llm_endpoint": "http://127.0.0.1:1/v1",
            }
        )
    )
    try:
        review = client.get("/").text
        assert "waiting_operator" in review and "0.42" in review
        assert "fed back: &lt;b&gt;fix the syntax&lt;/b&gt;" in review
        issue = client.get("/issue/bad").text
        assert "compile: invalid syntax" in issue and "smollm2" in issue
    finally:
        propose.unlink()


def append_raw_event(root: Path, fields: dict[str, Any]) -> None:
    """A chained event of a kind this branch does not write yet (issue 15's rollback_proposed)."""
    events = provenance.read_events(str(root))
    seq, prev = (events[-1]["seq"], events[-1]["hash"]) if events else (-1, "0" * 64)
    event = provenance.chain_event(fields, seq + 1, prev, provenance.utc_now())
    with open(provenance.log_path(str(root)), "ab") as fh:
        fh.write(provenance.format_line(event))


def test_rollback_proposals_wait_until_the_commit_is_rolled_back(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    sha = "a" * 40
    append_raw_event(
        tmp_path,
        {
            "event": "rollback_proposed",
            "patch_id": "p@1",
            "sha": sha,
            "token": "t",
            "confirm": f"doit rollback sha={sha} confirm=t operator=NAME reason=…",
            "source": "ci",
            "failure_context": {"check": "tests", "state": "failure"},
        },
    )
    [item] = records.waiting(str(tmp_path))
    assert (item.kind, item.what, item.source) == ("rollback", sha, "ci")
    assert '"state": "failure"' in item.failure_context
    append_raw_event(
        tmp_path,
        {"event": "rollback", "patch_id": "p@1", "reverted_commit": sha, "revert_commit": "b" * 40},
    )
    assert records.waiting(str(tmp_path)) == []


# --- refusals of actions ----------------------------------------------------------------------


def test_every_action_with_a_wrong_csrf_token_is_refused(
    logged_in: tuple[TestClient, str],
) -> None:
    client, csrf = logged_in
    for path, data in (
        ("/issue/good/promote", {"tree": "x"}),
        ("/issue/good/verify", {}),
        ("/rollback/prepare", {"sha": "a" * 40}),
        ("/rollback/confirm", {"sha": "a" * 40, "token": "t", "reason": "r"}),
        ("/audit/run", {}),
    ):
        for sent in ({}, {"csrf": csrf[:-1] + "x"}):
            done = client.post(path, data={**data, **sent})
            assert done.status_code == 403, (path, sent)
            assert "CSRF" in done.text
    assert client.app.state.jobs.all() == []  # type: ignore[attr-defined]


def test_read_only_console_refuses_every_action_and_hides_the_buttons(verified: Project) -> None:
    with console(verified, read_only=True) as client:
        csrf = login(client)
        page = client.get("/").text
        assert "read-only" in page and "Promote…" not in page
        assert "Land " not in client.get("/issue/good/promote").text
        assert "Prepare rollback" not in client.get("/history").text
        assert "Run doit audit" not in client.get("/audit").text
        for path in (
            "/issue/good/promote",
            "/issue/good/verify",
            "/audit/run",
            "/rollback/prepare",
            "/rollback/confirm",
        ):
            done = client.post(path, data={"csrf": csrf, "sha": "a" * 40})
            assert done.status_code == 403 and "read-only" in done.text, path
        assert client.app.state.jobs.all() == []  # type: ignore[attr-defined]


def test_promote_refuses_stale_failed_and_moved_workspaces(
    logged_in: tuple[TestClient, str],
) -> None:
    client, csrf = logged_in
    stale = client.post("/issue/stale/promote", data={"csrf": csrf, "tree": "x"})
    assert stale.status_code == 409 and "stale: patch edited" in stale.text
    assert client.get("/issue/stale/promote").status_code == 409
    failed = client.post("/issue/bad/promote", data={"csrf": csrf, "tree": "x"})
    assert failed.status_code == 409 and "did not pass" in failed.text
    moved = client.post("/issue/good/promote", data={"csrf": csrf, "tree": "0" * 40})
    assert moved.status_code == 409 and "review it again" in moved.text
    assert client.app.state.jobs.all() == []  # type: ignore[attr-defined]


def test_promote_page_shows_exactly_what_will_land(
    logged_in: tuple[TestClient, str], verified: Project
) -> None:
    client, _ = logged_in
    result = json.loads((verified.ws("good") / "result.json").read_text())
    page = client.get("/issue/good/promote").text
    assert f'<code id="tree">{result["tree"]}</code>' in page
    assert "<li><code>M</code> calc/ops.py</li>" in page
    assert "doit promote issue=good operator=tester" in page


def test_rollback_refusals_bad_sha_unprepared_wrong_token_no_reason(
    logged_in: tuple[TestClient, str],
) -> None:
    client, csrf = logged_in
    bad = client.post("/rollback/prepare", data={"csrf": csrf, "sha": "HEAD; rm -rf /"})
    assert bad.status_code == 400 and "not a commit id" in bad.text
    unprepared = client.post(
        "/rollback/confirm", data={"csrf": csrf, "sha": "a" * 40, "token": "t", "reason": "r"}
    )
    assert unprepared.status_code == 409 and "prepare the rollback" in unprepared.text


def test_a_rollback_plan_that_fails_offers_nothing_to_confirm(
    logged_in: tuple[TestClient, str],
) -> None:
    client, csrf = logged_in
    plan = client.post("/rollback/prepare", data={"csrf": csrf, "sha": "deadbeef" * 5})
    assert plan.status_code == 409
    assert "The plan failed" in plan.text and "RESULT: FAIL" in plan.text
    assert 'id="confirm-form"' not in plan.text


def test_the_jobs_page_and_a_verify_job_show_the_steps(
    logged_in: tuple[TestClient, str], verified: Project
) -> None:
    client, csrf = logged_in
    job = finished(
        client, client.post("/issue/bad/verify", data={"csrf": csrf}, follow_redirects=False)
    )
    assert job.returncode != 0 and job.summary()["RESULT"] == "FAIL", job.output()
    assert (".", "verify:bad-gate-compile") in job.steps()  # the failed gate reran
    status = client.get(f"/jobs/{job.id}/status").text
    assert "hx-trigger" not in status  # finished: the page stops polling
    assert "RESULT: FAIL" in status and "verify:bad-gate-compile" in status
    assert "verify bad" in client.get("/jobs").text


# --- landing and rolling back: the real doit commands -----------------------------------------


def test_promote_then_roll_back_through_the_console(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project(gates=GATES)
    patch = project.patch("good.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    base = git(project.live, "rev-parse", "HEAD")
    with console(project) as client:
        csrf = login(client)
        tree = json.loads((project.ws("good") / "result.json").read_text())["tree"]
        running = client.post(
            "/issue/good/promote", data={"csrf": csrf, "tree": tree}, follow_redirects=False
        )
        job_page = client.get(running.headers["location"]).text
        assert "doit promote issue=good operator=tester" in job_page
        job = finished(client, running)
        assert job.returncode == 0, job.output()
        assert job.summary()["RESULT"] == "SUCCESS"
        landed = git(project.live, "rev-parse", "HEAD")
        assert landed != base and job.summary()["COMMIT"] == landed
        assert "Patchgate-Operator: tester" in git(project.live, "log", "-1", "--format=%B")
        assert f"COMMIT: {landed}" in client.get(f"/jobs/{job.id}/status").text

        history = client.get("/history").text
        assert landed[:12] in history and "good@" in history and "tester" in history
        plan = client.post("/rollback/prepare", data={"csrf": csrf, "sha": landed})
        assert plan.status_code == 200, plan.text
        token = re.search(r'id="plan-token">([0-9a-f]+)<', plan.text)
        assert token and 'id="confirm" disabled' in plan.text
        confirm = {"csrf": csrf, "sha": landed, "token": token.group(1), "reason": "broke it"}
        wrong = client.post("/rollback/confirm", data={**confirm, "token": "000000000000"})
        assert wrong.status_code == 400 and "CONFIRM token" in wrong.text
        reasonless = client.post("/rollback/confirm", data={**confirm, "reason": "  "})
        assert reasonless.status_code == 400 and "reason" in reasonless.text
        assert git(project.live, "rev-parse", "HEAD") == landed  # nothing ran
        job = finished(
            client, client.post("/rollback/confirm", data=confirm, follow_redirects=False)
        )
        assert job.returncode == 0, job.output()
        assert any(name.endswith("-land") for _, name in job.steps())
        revert = git(project.live, "rev-parse", "HEAD")
        assert job.summary()["REVERTS"] == landed
        rows = {r.commit: r for r in records.landings(str(project.path))}
        assert rows[landed].rolled_back_by == revert
        assert rows[landed].operator == "tester" and rows[revert].operator == "tester"
        again = client.post("/rollback/confirm", data=confirm)
        assert again.status_code == 409  # a plan is used once

        # The promotion ran doit audit's check after it landed (audit_after_promote): its
        # report is there already; the button runs the audit again.
        assert "no audit has run yet" not in client.get("/audit").text
        job = finished(
            client, client.post("/audit/run", data={"csrf": csrf}, follow_redirects=False)
        )
        assert job.returncode == 0, job.output()
        audit_page = client.get("/audit").text
        assert "verdict pass" in audit_page and "# Audit of main" in audit_page


HOLD = (
    "import os, sys, time\n"
    "d = sys.argv[1]\n"
    "while os.path.exists(d + '/arm') and not os.path.exists(d + '/go'):\n"
    "    time.sleep(0.02)\n"
)


def test_a_cli_promote_and_a_console_promote_at_once_land_once(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    """The CLI promotion holds the lock (its live gate waits for a signal) while the console
    promotes the same workspace: the console's doit run is refused at once, naming the CLI's;
    then the CLI lands. One commit, one apply event."""
    signal_dir = tmp_path / "signal"
    signal_dir.mkdir()
    hold = {"name": "hold", "command": ["{python}", "-c", HOLD, str(signal_dir)], "timeout": 60}
    project = make_project(gates=[*GATES, hold], live_gates=["hold"], jail_binds=[str(signal_dir)])
    patch = project.patch("good.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    base = git(project.live, "rev-parse", "HEAD")
    (signal_dir / "arm").touch()  # from now on the hold gate waits for "go"
    cli = subprocess.Popen(
        doit_argv(project.path, "promote", "issue=good", "operator=cli-user"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while lock.holder(str(project.path)).get("pid") != cli.pid:
            assert cli.poll() is None and time.monotonic() < deadline, "the CLI never locked"
            time.sleep(0.02)
        with console(project) as client:
            csrf = login(client)
            tree = json.loads((project.ws("good") / "result.json").read_text())["tree"]
            sent = client.post(
                "/issue/good/promote", data={"csrf": csrf, "tree": tree}, follow_redirects=False
            )
            job = finished(client, sent)
        assert job.returncode != 0, job.output()
        assert f"another promotion is running: pid {cli.pid}" in job.output()
        assert git(project.live, "rev-parse", "HEAD") == base
    finally:
        (signal_dir / "go").touch()
        cli_out, _ = cli.communicate(timeout=JOB_TIMEOUT)
    assert cli.returncode == 0, cli_out
    commits = git(project.live, "rev-list", f"{base}..HEAD").split()
    applies = [e for e in provenance.read_events(str(project.path)) if e["event"] == "apply"]
    assert len(commits) == 1 and [a["commit_hash"] for a in applies] == commits
    assert applies[0]["operator"] == "cli-user"


# --- doit ui itself ---------------------------------------------------------------------------


def test_doit_ui_prints_the_login_token_serves_and_logs_no_secret(
    make_project: ProjectFactory,
) -> None:
    import httpx

    project = make_project(ui={"port": 0})
    child = subprocess.Popen(
        doit_argv(project.path, "ui"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env(),
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("login token" in ln for ln in lines):
            lines.append(child.stdout.readline())
            if not lines[-1] and child.poll() is not None:
                break  # it ended without serving: the assertion below shows its output
        url = re.search(r"console: (http://127\.0\.0\.1:\d+)/login", "".join(lines))
        token = re.search(r"login token (\S+)", "".join(lines))
        assert url and token, lines
        with httpx.Client(base_url=url.group(1)) as web:
            form = web.get("/login")
            done = web.post("/login", data={"secret": token.group(1), "csrf": csrf_of(form.text)})
            assert done.status_code == 303
            assert "Workspaces" in web.get("/").text
    finally:
        os.killpg(child.pid, signal.SIGINT)
        child.communicate(timeout=30)
    logs = "".join(p.read_text() for p in (project.path / "patches" / "logs").glob("*"))
    assert token.group(1) not in logs


def test_doit_ui_refuses_a_bad_configuration_in_one_line(make_project: ProjectFactory) -> None:
    project = make_project(ui={"operators": {"bob": "scrypt$nonsense"}})
    done = project.run("ui")
    assert done.code != 0
    assert "ui.operators.bob in patchgate.yaml is not a password hash" in done.out
    assert "Traceback" not in done.out


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    import socket

    from patchgate.ui.command import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PatchgateError, match=f"cannot listen on 127.0.0.1:{port} .*ui.port"):
            serve(str(tmp_path), str(DODO), Settings(port=port))


def test_the_console_works_on_the_demo_right_after_doit_demo(tmp_path: Path) -> None:
    """(The lead may fold this into test_demo's run: it only reads what doit demo left.)"""
    done = Project(tmp_path, tmp_path / "build" / "demo" / "live").run("demo", timeout=300)
    assert done.code == 0, done.out
    demo = tmp_path / "build" / "demo"
    with console(Project(demo, demo / "live")) as client:
        login(client)
        review = client.get("/").text
        assert "bad_add_str" in review and "stale: live moved" in review
        issue = client.get("/issue/bad_add_str").text
        assert "Incompatible return value type" in issue and "-    return a + b" in issue
        # oldest first: the promotion, its rollback, then the demo's proposal (issue 14)
        landed, reverted = records.landings(str(demo))[::-1][:2]
        assert landed.rolled_back_by == reverted.commit and landed.operator == "demo-operator"
        history = client.get("/history").text
        assert landed.commit[:12] in history and "calc: mean() of nothing is 0.0" in history
        assert "verdict pass" in client.get("/audit").text

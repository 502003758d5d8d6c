"""The operator console in a real browser: Playwright driving Debian's chromium.

Skipped, with the reason, when chromium or Playwright is missing (bin/setup installs chromium
when it runs as root). Screenshots go to $PATCHGATE_SCREENSHOTS when set (docs/images/ is made
that way), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADD_MUL, DODO, Project, git
from patchgate.ui.app import create_app
from patchgate.ui.auth import Settings
from test_ui import TOKEN, XSS_NAME, XSS_PATCH, new_project

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no browser: {CHROMIUM} is missing (apt-get install chromium; bin/setup does it as root)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JOB_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, calc_template: Path) -> Project:
    project = new_project(tmp_path_factory.mktemp("browser"), calc_template)
    paths = [project.patch("mul.py", ADD_MUL), project.patch("xss.py", XSS_PATCH)]
    done = project.run("verify", "patch=" + ",".join(paths))
    assert done.code == 0, done.out
    attempt = {
        "n": 1,
        "patch": "patches/xss.py",
        "stage": "GATES",
        "reason": "the model's first try did not compile",
        "confidence_score": 0.35,
        "feedback": "compile: SyntaxError at line 1",
        "verdict": "fail",
    }
    (project.ws("xss") / "propose.json").write_text(
        json.dumps(
            {
                "issue": "xss",
                "request_sha256": "0" * 64,
                "state": "waiting_operator",
                "attempts": [attempt],
                "model": "smollm2-135m",
                "llm_endpoint": "http://127.0.0.1:8080/v1",
            }
        )
    )
    return project


@pytest.fixture(scope="module")
def url(project: Project) -> Iterator[str]:
    """The console for ``project``, served by uvicorn on a free port of 127.0.0.1."""
    import uvicorn

    app = create_app(str(project.path), Settings(token_operator="ana"), str(DODO), TOKEN)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("PATCHGATE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(browser: Any, url: str) -> Iterator[Any]:
    """One logged-in tab; every dialog (an alert an injected script would open) is recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    tab.goto(f"{url}/")
    assert tab.url.endswith("/login")
    tab.fill("input[name=secret]", TOKEN)
    tab.click("button:has-text('Log in')")
    tab.wait_for_url(f"{url}/")
    yield tab
    context.close()


def shot(tab: Any, folder: Path, name: str) -> None:
    tab.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def wait_done(tab: Any) -> None:
    """The job page updates itself (htmx polling) until the run ends: no reload."""
    tab.evaluate("window.__notReloaded = true")
    tab.wait_for_selector("#job-status[data-state=done]", timeout=JOB_TIMEOUT_MS)
    assert tab.evaluate("window.__notReloaded") is True


def test_review_and_issue_pages_show_verdicts_diff_and_names_as_text(
    page: Any, url: str, shots: Path
) -> None:
    assert page.locator("#workspaces tr", has_text="mul").locator(".verdict").inner_text() == "pass"
    assert "the model's first try did not compile" in page.locator("#waiting").inner_text()
    shot(page, shots, "review")
    page.click("#workspaces a:text-is('xss')")
    assert XSS_NAME in page.locator("#files").inner_text()  # shown as text
    assert page.dialogs == [] and page.locator("script", has_text="alert").count() == 0
    page.goto(f"{url}/issue/mul")
    assert "+def mul(a: int, b: int) -> int:" in page.locator("#diff").inner_text()
    page.click("#gates summary")
    shot(page, shots, "issue")


def test_promote_shows_what_lands_and_the_job_updates_without_reload(
    page: Any, url: str, shots: Path, project: Project
) -> None:
    tree = json.loads((project.ws("mul") / "result.json").read_text())["tree"]
    page.goto(f"{url}/issue/mul")
    page.click("text=Promote…")
    assert page.locator("#tree").inner_text() == tree
    assert page.locator("#files").inner_text().strip() == "M calc/ops.py"
    shot(page, shots, "promote")
    page.click("#land")
    page.wait_for_url(f"{url}/jobs/*")
    wait_done(page)
    assert "RESULT: SUCCESS" in page.locator("#summary").inner_text()
    assert "promote:mul-land" in page.locator(".steps").inner_text()
    shot(page, shots, "promote-job")
    assert "Patchgate-Operator: ana" in git(project.live, "log", "-1", "--format=%B")


def test_rollback_confirm_stays_disabled_until_reason_and_token(
    page: Any, url: str, shots: Path, project: Project
) -> None:
    landed = git(project.live, "rev-parse", "HEAD")
    page.goto(f"{url}/history")
    row = page.locator("#history tr", has_text=landed[:12])
    row.locator("text=Prepare rollback").click()
    token = page.locator("#plan-token").inner_text()
    confirm = page.locator("#confirm")
    assert confirm.is_disabled()
    page.fill("#reason", "mul() broke the build")
    assert confirm.is_disabled()
    page.fill("#token", "000000000000")
    assert confirm.is_disabled()
    page.fill("#token", token)
    assert confirm.is_enabled()
    shot(page, shots, "rollback-plan")
    confirm.click()
    page.wait_for_url(f"{url}/jobs/*")
    page.wait_for_selector(".steps li:nth-child(3)", timeout=JOB_TIMEOUT_MS)
    shot(page, shots, "rollback-running")  # most likely still running: the picture for the docs
    wait_done(page)
    summary = page.locator("#summary").inner_text()
    assert "RESULT: SUCCESS" in summary and f"REVERTS: {landed}" in summary
    shot(page, shots, "rollback-job")
    page.goto(f"{url}/history")
    revert = git(project.live, "rev-parse", "HEAD")[:12]
    landed_row = page.locator("#history tbody tr").filter(
        has=page.locator(f"code:text-is('{landed[:12]}')")
    )
    assert revert in landed_row.inner_text()  # rolled back by
    shot(page, shots, "history")


def test_audit_runs_from_its_page(page: Any, url: str, shots: Path) -> None:
    page.goto(f"{url}/audit")
    page.click("#run-audit")
    page.wait_for_url(f"{url}/jobs/*")
    wait_done(page)
    assert "RESULT: SUCCESS" in page.locator("#summary").inner_text()
    page.goto(f"{url}/audit")
    assert "# Audit of main" in page.locator("#report").inner_text()
    shot(page, shots, "audit")


def test_no_page_of_the_console_reaches_outside_127_0_0_1(browser: Any, url: str) -> None:
    """htmx is served by the console itself: the page works offline, nothing from a CDN."""
    context = browser.new_context()
    tab = context.new_page()
    requested: list[str] = []
    tab.on("request", lambda r: requested.append(r.url))
    tab.goto(f"{url}/login")
    assert tab.evaluate("typeof htmx") == "object"
    context.close()
    assert requested and all(r.startswith(url) for r in requested), requested
    assert shutil.which("chromium") or os.path.exists(CHROMIUM)

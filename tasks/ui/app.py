"""The operator console's routes (FastAPI): pages read records, actions start doit jobs.

Every state-changing request is a POST that passes, in this order: a logged-in session
(401), its CSRF token (403), not read-only (403), then the action's own checks (a stale
workspace, a tree that moved, a wrong CONFIRM token: 409/400). Each action runs the doit
command an operator would type (see ``jobs``); the console has no lifecycle code of its own.
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ..errors import PatchgateError
from ..steps import unwritable
from . import records
from .auth import Session, Sessions, Settings, csrf_ok
from .jobs import Job, Jobs, summary_of

HERE = os.path.dirname(os.path.abspath(__file__))
COOKIE = "patchgate_session"
LOGIN_COOKIE = "patchgate_login_csrf"
# Nothing inline may run: an injected <script> would be blocked even if escaping failed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """A request the console will not carry out: shown as a page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotLoggedIn(Exception):
    pass


def create_app(root: str, settings: Settings, dodo: str, token: str | None = None) -> FastAPI:
    """The console for project ``root``; it runs doit commands with dodo file ``dodo``."""
    root = os.path.abspath(root)
    app = FastAPI(title="patchgate console", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=os.path.join(HERE, "templates"))
    sessions = Sessions(settings, token)
    jobs = Jobs(root, dodo)
    app.state.sessions = sessions
    app.state.jobs = jobs
    app.state.root = root
    app.mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = sessions.get(request.cookies.get(COOKIE))
        context.update(
            session=session,
            settings=settings,
            csrf=session.csrf if session else "",
            read_only=settings.read_only,
            root=root,
        )
        return templates.TemplateResponse(request, name, context, status_code=status)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> HTMLResponse:
        return page(request, "error.html", exc.status, message=exc.message)

    @app.exception_handler(PatchgateError)
    async def patchgate_error(request: Request, exc: PatchgateError) -> HTMLResponse:
        # The console's own errors name what is not there; others are the project's state.
        status = 404 if exc.stage == records.STAGE else 500
        return page(request, "error.html", status, message=f"{exc.stage}: {exc.message}")

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> HTMLResponse:
        return page(request, "error.html", 500, message=f"UI: {unwritable(exc)}")

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if request.method == "GET" and "hx-request" not in request.headers:
            return RedirectResponse("/login", status_code=303)
        return page(request, "error.html", 401, message="log in first (the console's /login)")

    def login_required(request: Request) -> Session:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise NotLoggedIn()
        return session

    def may_change(request: Request, csrf: str) -> Session:
        """The checks every state-changing request passes first."""
        session = login_required(request)
        if not csrf_ok(session, csrf or request.headers.get("x-csrf-token")):
            raise Refused(403, "the form's CSRF token is missing or wrong; reload the page")
        if settings.read_only:
            raise Refused(403, "this console is read-only (ui.read_only in patchgate.yaml)")
        return session

    def to_job(job: Job) -> RedirectResponse:
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    # --- login ----------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        nonce = secrets.token_urlsafe(24)
        response = page(request, "login.html", login_csrf=nonce, error=None)
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict")
        return response

    @app.post("/login")
    def login(
        request: Request,
        secret: str = Form(""),
        name: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
            raise Refused(403, "the login form's CSRF token is missing or wrong; reload /login")
        session_id = sessions.login(name.strip(), secret)
        if session_id is None:
            return page(
                request,
                "login.html",
                401,
                login_csrf=expected,
                error="wrong token, name or password",
            )
        done = RedirectResponse("/", status_code=303)
        done.set_cookie(COOKIE, session_id, httponly=True, samesite="strict")
        done.delete_cookie(LOGIN_COOKIE)
        return done

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        session = login_required(request)
        if not csrf_ok(session, csrf):
            raise Refused(403, "the form's CSRF token is missing or wrong; reload the page")
        sessions.logout(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # --- review ---------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def review(request: Request) -> HTMLResponse:
        login_required(request)
        return page(
            request,
            "review.html",
            rows=records.workspaces(root),
            waiting=records.waiting(root),
            jobs=jobs.all()[:5],
        )

    @app.get("/issue/{issue}", response_class=HTMLResponse)
    def issue_page(request: Request, issue: str) -> HTMLResponse:
        login_required(request)
        return page(request, "issue.html", d=records.issue_detail(root, issue))

    @app.get("/issue/{issue}/log/{name}", response_class=HTMLResponse)
    def log_page(request: Request, issue: str, name: str, page_no: int = 1) -> HTMLResponse:
        login_required(request)
        return page(
            request, "log.html", issue=issue, log=records.log_page(root, issue, name, page_no)
        )

    @app.post("/issue/{issue}/verify")
    def verify(request: Request, issue: str, csrf: str = Form("")) -> Response:
        session = may_change(request, csrf)
        row = records.workspace_row(root, issue)
        if not os.path.isfile(os.path.join(root, row.patch)):
            raise Refused(409, f"the patch file {row.patch} is gone; there is nothing to verify")
        job = jobs.start(f"verify {issue}", ["verify", f"patch={row.patch}"], session.operator)
        return to_job(job)

    # --- promote --------------------------------------------------------------------------

    def promotable(issue: str) -> records.IssueDetail:
        detail = records.issue_detail(root, issue)
        if detail.row.verdict != "pass":
            raise Refused(
                409, f"issue {issue} did not pass verification (verdict {detail.row.verdict})"
            )
        if detail.row.stale:
            raise Refused(
                409,
                f"issue {issue} is {detail.row.state}; verify it again before promoting it",
            )
        return detail

    @app.get("/issue/{issue}/promote", response_class=HTMLResponse)
    def promote_form(request: Request, issue: str) -> HTMLResponse:
        login_required(request)
        return page(request, "promote.html", d=promotable(issue))

    @app.post("/issue/{issue}/promote")
    def promote(
        request: Request, issue: str, csrf: str = Form(""), tree: str = Form("")
    ) -> Response:
        session = may_change(request, csrf)
        detail = promotable(issue)
        if not tree or tree != detail.tree:
            raise Refused(
                409,
                f"issue {issue}'s verified tree is {(detail.tree or '-')[:12]}, not the "
                f"{tree[:12] or 'unnamed'} the page showed; review it again",
            )
        args = ["promote", f"issue={issue}", f"operator={session.operator}"]
        return to_job(jobs.start(f"promote {issue}", args, session.operator))

    # --- history and rollback ---------------------------------------------------------------

    @app.get("/history", response_class=HTMLResponse)
    def history(request: Request) -> HTMLResponse:
        login_required(request)
        return page(
            request, "history.html", rows=records.landings(root), waiting=records.waiting(root)
        )

    def check_sha(sha: str) -> str:
        sha = sha.strip().lower()
        if not records.SHA_TEXT.match(sha):
            raise Refused(400, f"{sha[:60]!r} is not a commit id (7 to 40 hex digits)")
        return sha

    @app.post("/rollback/prepare", response_class=HTMLResponse)
    def prepare_rollback(request: Request, sha: str = Form(""), csrf: str = Form("")) -> Response:
        session = may_change(request, csrf)
        sha = check_sha(sha)
        code, output = jobs.run(["rollback", f"sha={sha}"])
        summary = summary_of(output)
        token = summary.get("TOKEN")
        if code == 0 and token:
            session.plans[sha] = token
        return page(
            request,
            "plan.html",
            200 if code == 0 and token else 409,
            sha=sha,
            output=output,
            summary=summary,
            token=token if code == 0 else None,
        )

    @app.post("/rollback/confirm")
    def confirm_rollback(
        request: Request,
        sha: str = Form(""),
        token: str = Form(""),
        reason: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        session = may_change(request, csrf)
        sha = check_sha(sha)
        planned = session.plans.get(sha)
        if planned is None:
            raise Refused(409, f"prepare the rollback of {sha[:12]} first; its plan is not here")
        if token.strip() != planned:
            raise Refused(400, "the token typed is not the plan's CONFIRM token; nothing was run")
        if not reason.strip():
            raise Refused(400, "give a reason for the rollback; nothing was run")
        del session.plans[sha]
        args = [
            "rollback",
            f"sha={sha}",
            f"confirm={planned}",
            f"operator={session.operator}",
            f"reason={' '.join(reason.split())}",
        ]
        return to_job(jobs.start(f"rollback {sha[:12]}", args, session.operator))

    # --- audit ----------------------------------------------------------------------------

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request) -> HTMLResponse:
        login_required(request)
        return page(request, "audit.html", report=records.audit_report(root))

    @app.post("/audit/run")
    def run_audit(request: Request, csrf: str = Form("")) -> Response:
        session = may_change(request, csrf)
        return to_job(jobs.start("audit", ["audit"], session.operator))

    # --- jobs -----------------------------------------------------------------------------

    def job_or_404(job_id: str) -> Job:
        job = jobs.get(job_id)
        if job is None:
            raise Refused(404, f"there is no job {job_id[:40]!r} in this console")
        return job

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs_page(request: Request) -> HTMLResponse:
        login_required(request)
        return page(request, "jobs.html", jobs=jobs.all())

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str) -> HTMLResponse:
        login_required(request)
        return page(request, "job.html", job=job_or_404(job_id))

    @app.get("/jobs/{job_id}/status", response_class=HTMLResponse)
    def job_status(request: Request, job_id: str) -> HTMLResponse:
        login_required(request)
        return page(request, "job_status.html", job=job_or_404(job_id))

    return app

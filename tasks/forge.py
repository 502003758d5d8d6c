"""The one module that talks to the forge: a small GitHub REST client, and the annotations.

Configuration (``forge:`` in patchgate.yaml; absent or ``null``: no forge, nothing is sent)::

    forge:
      kind: github                  # the only kind today
      repository: OWNER/NAME
      api_url: https://api.github.com   # GitHub Enterprise: https://HOST/api/v3
      token_env: GITHUB_TOKEN       # the environment variable holding the token
      tag_on_rollback: ["@alice", "@org/team"]
      commit_status: true           # a patchgate status on landed commits, where the token may

The client (``GitHub``) is ``httpx`` with what a long-running poller needs:

* rate limits: a 429, or a 403 with ``Retry-After`` / ``X-RateLimit-Remaining: 0``, waits as the
  forge says (``Retry-After`` seconds, else until ``X-RateLimit-Reset``) if that fits in
  ``max_wait`` seconds in all; otherwise one ``ForgeError`` (``transient``) naming when to retry;
* 5xx and connection errors are retried ``retries`` times with exponential backoff;
* polling GETs send ``If-None-Match`` with the last ETag: a 304 answers from the cache (GitHub
  does not count it against the rate limit);
* 401, 404, other 4xx and malformed JSON are one clear line each;
* the token is only ever an ``Authorization`` header; every message leaving this module is
  redacted (the token, and promote's known secrets). The jail never sees it: its environment
  is an allowlist (``proc.ENV_ALLOWLIST``).

Sticky comments: one comment per pull request or issue and purpose, found again by a hidden
marker ``<!-- patchgate:KEY -->`` and edited in place. Nothing is remembered locally, so a crash
between the POST and anything after it cannot lead to a second comment: the rerun finds it.

Annotations (``after_finish``, every landing's: ``after_landing``, ``after_rollback``; and
``annotate_proposal``) never fail what called them: a forge error becomes one
``WARNING: forge: …`` line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import config, git, provenance, redact, report
from .errors import PatchgateError
from .steps import read_json, write_json

if TYPE_CHECKING:  # landing calls this module after a landing
    import httpx  # imported where a client is made: not on every doit command's load

    from .landing import LandingContext

STAGE = "FORGE"
KINDS = ("github",)
DEFAULT_API = "https://api.github.com"
USER_AGENT = "patchgate"
API_VERSION = "2022-11-28"
STATE_DIR = os.path.join("patches", ".state", "forge")
MARKER = "<!-- patchgate:{key} -->"
_MARKER_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
# Conclusions of a check run (and states of a commit status) that count as red / green.
RED = frozenset({"failure", "timed_out", "action_required", "error", "startup_failure"})
GREEN = frozenset({"success", "neutral", "skipped"})
MAX_PAGES = 20


class ForgeError(PatchgateError):
    """A forge request that did not succeed. ``transient``: trying later may work."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False):
        super().__init__(STAGE, message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class ForgeSettings:
    kind: str
    owner: str
    name: str
    api_url: str
    token_env: str
    timeout: float
    retries: int
    backoff: float
    max_wait: float
    tag_on_rollback: tuple[str, ...]
    commit_status: bool
    status_context: str

    @property
    def repository(self) -> str:
        return f"{self.owner}/{self.name}"


FORGE_DEFAULTS: dict[str, Any] = {
    "kind": "github",
    "repository": None,
    "api_url": DEFAULT_API,
    "token_env": "GITHUB_TOKEN",
    "timeout": 10,
    "retries": 4,
    "backoff": 1.0,
    "max_wait": 120,
    "tag_on_rollback": [],
    "commit_status": True,
    "status_context": "patchgate",
}


def settings(cfg: config.Config) -> ForgeSettings | None:
    """The ``forge:`` section as typed settings; None when no forge is configured."""
    raw = cfg["forge"]
    if not raw:
        return None
    values = {**FORGE_DEFAULTS, **raw}
    repository = str(values["repository"] or "")
    owner, sep, name = repository.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise PatchgateError(
            "CONFIG",
            f"forge: repository is {repository or 'missing'}; write it as OWNER/NAME "
            "(e.g. repository: octo/calc)",
        )
    if values["kind"] not in KINDS:
        raise PatchgateError(
            "CONFIG", f"forge: kind {values['kind']!r} is not one of {KINDS}; pick one of them"
        )
    return ForgeSettings(
        kind=str(values["kind"]),
        owner=owner,
        name=name,
        api_url=str(values["api_url"]).rstrip("/"),
        token_env=str(values["token_env"]),
        timeout=float(values["timeout"]),
        retries=int(values["retries"]),
        backoff=float(values["backoff"]),
        max_wait=float(values["max_wait"]),
        tag_on_rollback=tuple(str(t) for t in values["tag_on_rollback"]),
        commit_status=bool(values["commit_status"]),
        status_context=str(values["status_context"]),
    )


@dataclass
class _Cached:
    etag: str
    data: Any


@dataclass
class GitHub:
    """A GitHub REST client for one repository (see the module docstring)."""

    settings: ForgeSettings
    token: str | None = None
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    etags: dict[str, _Cached] = field(default_factory=dict)
    requests_made: int = 0

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get(self.settings.token_env) or None
        headers = {
            "Accept": "application/vnd.github+json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Api-Version": API_VERSION,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        import httpx

        self._http = httpx.Client(
            base_url=self.settings.api_url,
            headers=headers,
            timeout=self.settings.timeout,
            transport=self.transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    # --- secrets ---------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        text = redact.redact(text)
        if self.token and len(self.token) >= 4:
            text = text.replace(self.token, "***")
        return text

    # --- one request -----------------------------------------------------------------------

    def repo_path(self, tail: str) -> str:
        return f"/repos/{self.settings.owner}/{self.settings.name}{tail}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        poll: bool = False,
    ) -> Any:
        """The JSON of a successful answer (None for 204), or one ForgeError."""
        data, _ = self._request(method, path, body=body, params=params, poll=poll)
        return data

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        poll: bool = False,
    ) -> tuple[Any, httpx.Response]:
        import httpx

        what = f"{method} {path}"
        key = f"{path}?{sorted((params or {}).items())}"
        cached = self.etags.get(key) if poll and method == "GET" else None
        headers = {"If-None-Match": cached.etag} if cached else {}
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                self.requests_made += 1
                reply = self._http.request(
                    method, path, json=body, params=dict(params or {}), headers=headers
                )
            except httpx.HTTPError as exc:
                if attempt > self.settings.retries:
                    raise ForgeError(
                        self.redact(
                            f"the forge at {self.settings.api_url} did not answer {what} after "
                            f"{attempt} tries ({type(exc).__name__}: {exc}); check "
                            "forge.api_url and the network, then run the command again"
                        ),
                        transient=True,
                    ) from None
                self.sleep(self._backoff(attempt))
                continue
            status = reply.status_code
            if status == 304 and cached is not None:
                return cached.data, reply
            wait = self._rate_limit_wait(reply)
            if wait is not None:
                if waited + wait > self.settings.max_wait:
                    until = datetime.fromtimestamp(self.clock() + wait, UTC).strftime(
                        "%Y-%m-%d %H:%M:%S"
                    )
                    raise ForgeError(
                        f"the forge rate-limits {what} for {wait:.0f} s more (HTTP {status}), "
                        f"longer than forge.max_wait ({self.settings.max_wait:.0f} s); nothing "
                        f"was changed — run the command again after {until} UTC",
                        status=status,
                        transient=True,
                    )
                waited += wait
                self.sleep(wait)
                continue
            if status >= 500:
                if attempt > self.settings.retries:
                    raise ForgeError(
                        f"the forge answered {what} with HTTP {status} {attempt} times; it may "
                        "be down — run the command again later",
                        status=status,
                        transient=True,
                    )
                self.sleep(self._backoff(attempt))
                continue
            if status >= 400:
                raise self._client_error(what, reply)
            if status == 204 or not reply.content:
                return None, reply
            try:
                data = reply.json()
            except ValueError:
                raise ForgeError(
                    f"the forge answered {what} with malformed JSON (HTTP {status}, "
                    f"{len(reply.content)} bytes); is forge.api_url the REST API "
                    f"({self.settings.api_url})?",
                    status=status,
                    transient=True,
                ) from None
            etag = reply.headers.get("ETag")
            if poll and method == "GET" and etag:
                self.etags.pop(key, None)  # re-inserted: the dict stays ordered oldest first
                self.etags[key] = _Cached(etag, data)
            return data, reply

    def _backoff(self, attempt: int) -> float:
        return float(min(self.settings.backoff * 2 ** (attempt - 1), 60.0))

    def _rate_limit_wait(self, reply: httpx.Response) -> float | None:
        """Seconds the forge asks to wait, when this answer is a rate limit; else None."""
        if reply.status_code not in (403, 429):
            return None
        after = reply.headers.get("Retry-After")
        if after is not None:
            with contextlib.suppress(ValueError):
                return max(0.0, float(after))
        if reply.headers.get("X-RateLimit-Remaining") == "0":
            reset = reply.headers.get("X-RateLimit-Reset")
            with contextlib.suppress(TypeError, ValueError):
                return max(0.0, float(str(reset)) - self.clock()) + 1.0
            return 60.0
        if reply.status_code == 429:
            return 60.0
        return None

    def _client_error(self, what: str, reply: httpx.Response) -> ForgeError:
        status = reply.status_code
        detail = ""
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(reply.json().get("message") or "")
        detail = self.redact(" ".join(detail.split())[:200])
        said = f" ({detail})" if detail else ""
        if status == 401:
            where = f"${self.settings.token_env}" if self.token else "no token"
            message = (
                f"the forge refused {what}: HTTP 401{said}; the token ({where}) is missing, "
                f"expired or wrong — set {self.settings.token_env} to a valid token"
            )
        elif status == 403:
            message = (
                f"the forge refused {what}: HTTP 403{said}; the token lacks the permission "
                "for it (statuses, checks, issues and pull requests need repository access)"
            )
        elif status == 404:
            message = (
                f"the forge has no {what}: HTTP 404{said}; check forge.repository "
                f"({self.settings.repository}) and that the token can see it"
            )
        else:
            message = f"the forge refused {what}: HTTP {status}{said}"
        return ForgeError(self.redact(message), status=status)

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every item of a list endpoint (``per_page=100``, at most MAX_PAGES pages)."""
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            data = self.request(
                "GET", path, params={**(params or {}), "per_page": 100, "page": page}
            )
            if not isinstance(data, list):
                raise ForgeError(f"the forge answered GET {path} with no list; is it GitHub?")
            items += data
            if len(data) < 100:
                break
        return items

    # --- the endpoints patchgate uses ------------------------------------------------------

    def combined_status(self, sha: str) -> dict[str, Any]:
        data = self.request("GET", self.repo_path(f"/commits/{sha}/status"), poll=True)
        return _object(data, "combined status")

    def check_runs(self, sha: str) -> list[dict[str, Any]]:
        data = _object(
            self.request(
                "GET",
                self.repo_path(f"/commits/{sha}/check-runs"),
                params={"per_page": 100},
                poll=True,
            ),
            "check runs",
        )
        runs = data.get("check_runs")
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []

    def annotations(self, check_run_id: int) -> list[dict[str, Any]]:
        data = self.request(
            "GET", self.repo_path(f"/check-runs/{check_run_id}/annotations"), poll=True
        )
        return [a for a in data if isinstance(a, dict)] if isinstance(data, list) else []

    def pulls_of_commit(self, sha: str) -> list[dict[str, Any]]:
        data = self.request("GET", self.repo_path(f"/commits/{sha}/pulls"))
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []

    def issue(self, number: int) -> dict[str, Any]:
        return _object(self.request("GET", self.repo_path(f"/issues/{number}")), "issue")

    def set_status(self, sha: str, state: str, description: str, target_url: str | None) -> None:
        body: dict[str, Any] = {
            "state": state,
            "description": description[:140],
            "context": self.settings.status_context,
        }
        if target_url:
            body["target_url"] = target_url
        self.request("POST", self.repo_path(f"/statuses/{sha}"), body=body)

    def open_pull(self, head: str, base: str, title: str, text: str) -> tuple[dict[str, Any], str]:
        """Open the pull request of branch ``head`` into ``base``, or update the open one.

        Returns (the pull request, "created" | "updated").
        """
        body = self.redact(text)
        found = self.request(
            "GET",
            self.repo_path("/pulls"),
            params={"head": f"{self.settings.owner}:{head}", "state": "open", "per_page": 100},
        )
        mine = [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []
        if mine:
            number = int(mine[0]["number"])
            pull = self.request(
                "PATCH", self.repo_path(f"/pulls/{number}"), body={"title": title, "body": body}
            )
            return _object(pull, "pull request"), "updated"
        pull = self.request(
            "POST",
            self.repo_path("/pulls"),
            body={"title": title, "head": head, "base": base, "body": body},
        )
        return _object(pull, "pull request"), "created"

    def sticky_comment(self, number: int, key: str, text: str) -> tuple[int, str]:
        """Create or update the one comment of ``key`` on issue/PR ``number``.

        Returns (comment id, "created" | "updated" | "unchanged").
        """
        if not _MARKER_KEY.match(key):
            raise ValueError(f"bad marker key {key!r}")
        marker = MARKER.format(key=key)
        body = f"{marker}\n{self.redact(text)}"
        comments = self.paginate(self.repo_path(f"/issues/{number}/comments"))
        mine = [c for c in comments if isinstance(c, dict) and marker in str(c.get("body") or "")]
        if mine:
            first = mine[0]
            if first.get("body") == body:
                return int(first["id"]), "unchanged"
            self.request(
                "PATCH", self.repo_path(f"/issues/comments/{first['id']}"), body={"body": body}
            )
            return int(first["id"]), "updated"
        made = _object(
            self.request("POST", self.repo_path(f"/issues/{number}/comments"), body={"body": body}),
            "comment",
        )
        return int(made["id"]), "created"


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ForgeError(f"the forge's {what} is not a JSON object; is forge.api_url GitHub's API?")
    return data


def client(cfg: config.Config, **kw: Any) -> GitHub | None:
    """A client for the configured forge, or None when there is none."""
    found = settings(cfg)
    return GitHub(found, **kw) if found else None


# --- checks: what a commit's CI says --------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One named check of a commit: a check run (latest of its name) or a commit status."""

    name: str
    verdict: str  # "red" | "green" | "pending"
    conclusion: str
    run_id: int | None
    details_url: str | None
    runs: tuple[int, ...] = ()  # every check-run id of this name (re-runs), oldest first
    # The newest runs of this name that are all red, newest last: (1, 2) = red, re-run red.
    # Empty for a commit status (a status has no history of runs here).
    red_streak: tuple[int, ...] = ()


def verdict_of(status: str | None, conclusion: str | None) -> str:
    if status is not None and status != "completed":
        return "pending"
    if conclusion in RED:
        return "red"
    if conclusion in GREEN:
        return "green"
    if conclusion in ("cancelled", "stale", None):
        return "pending"  # not a verdict on the code: wait for the next run
    return "pending"


def checks_of(gh: GitHub, sha: str) -> dict[str, Check]:
    """Every check of commit ``sha``: check runs (latest per name) and commit statuses."""
    found: dict[str, Check] = {}
    runs = sorted(gh.check_runs(sha), key=lambda r: int(r.get("id") or 0))
    ids: dict[str, list[int]] = {}
    streaks: dict[str, list[int]] = {}
    for run in runs:
        name = str(run.get("name") or "?")
        run_id = int(run.get("id") or 0)
        ids.setdefault(name, []).append(run_id)
        conclusion = run.get("conclusion")
        verdict = verdict_of(run.get("status"), conclusion)
        if verdict == "red":
            streaks.setdefault(name, []).append(run_id)
        elif verdict == "green":
            streaks[name] = []
        found[name] = Check(
            name=name,
            verdict=verdict,
            conclusion=str(conclusion or run.get("status") or "?"),
            run_id=run_id,
            details_url=run.get("details_url") or run.get("html_url"),
            runs=tuple(ids[name]),
            red_streak=tuple(streaks.get(name, [])) if verdict == "red" else (),
        )
    combined = gh.combined_status(sha)
    for status in combined.get("statuses") or []:
        if not isinstance(status, dict):
            continue
        name = str(status.get("context") or "?")
        if name == gh.settings.status_context:
            continue  # patchgate's own status says nothing about CI
        state = str(status.get("state") or "pending")
        found.setdefault(
            name,
            Check(
                name=name,
                verdict="pending" if state == "pending" else verdict_of("completed", state),
                conclusion=state,
                run_id=int(status["id"]) if isinstance(status.get("id"), int) else None,
                details_url=status.get("target_url"),
            ),
        )
    return found


def first_failing_test(gh: GitHub, check: Check) -> str | None:
    """The first failure annotation of a check run: ``path:line: title``, if it names one."""
    if check.run_id is None or not check.runs:
        return None
    for note in gh.annotations(check.run_id):
        if note.get("annotation_level") != "failure":
            continue
        title = " ".join(str(note.get("title") or note.get("message") or "").split())[:200]
        where = f"{note.get('path')}:{note.get('start_line')}" if note.get("path") else ""
        return ": ".join(p for p in (where, title) if p) or None
    return None


# --- annotations: what patchgate writes on the forge ----------------------------------------


def parse_trigger(raw: str | None) -> int | None:
    """``trigger=github:NUMBER`` (or ``#NUMBER``) -> the issue number; anything else -> None."""
    if not raw:
        return None
    text = raw.strip()
    for prefix in ("github:", "gh:", "#"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    else:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def trigger_path(root: str, issue: str) -> str:
    return os.path.join(root, STATE_DIR, "triggers", f"{issue}.json")


def trigger_of(root: str, issue: str, log: str | None) -> int | None:
    """The forge issue of patchgate issue ``issue``: trigger= on this command, else the one
    given when it was verified (remembered in patches/.state/forge/triggers/)."""
    raw = config.variable("trigger")
    if raw:
        number = parse_trigger(raw)
        if number is None:
            warn(log, f"trigger={raw} is not github:NUMBER; no issue is annotated")
            return None
        write_json(trigger_path(root, issue), {"trigger": number})
        return number
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(read_json(trigger_path(root, issue))["trigger"])
    return None


def verify_comment(event: Mapping[str, Any]) -> str:
    passed = event.get("event") == "verify_pass"
    gates = event.get("gates") or {}
    verdicts = ", ".join(f"{name}: {verdict}" for name, verdict in sorted(gates.items()))
    lines = [
        f"**patchgate verified patch `{event.get('patch_id')}`**: "
        f"{'pass' if passed else 'FAIL'} (issue `{event.get('issue')}`, not landed yet)",
        "",
        f"- gate verdicts: {verdicts or 'no gate ran'}",
    ]
    if not passed:
        lines.append(f"- {event.get('stage')}: {event.get('reason')}")
    return "\n".join(lines)


def after_verify(root: str, issue: str, event: Mapping[str, Any]) -> None:
    """verify's hook: with trigger=github:N, the issue's sticky comment shows the verdict.

    Never raises: a failing forge is a WARNING line, the verdict stands.
    """
    try:
        if not config.variable("trigger"):
            return
        number = trigger_of(root, issue, None)
        gh = client(config.load(root, cli={})) if number is not None else None
        if gh is None or number is None:
            return
        try:
            gh.sticky_comment(number, f"patch-{issue}", verify_comment(event))
        finally:
            gh.close()
    except (PatchgateError, OSError, ValueError, KeyError, TypeError) as exc:
        warn(None, f"the verdict of {issue} was not annotated: {exc}")


def propose_comment(issue: str, state: Mapping[str, Any], events: Sequence[dict[str, Any]]) -> str:
    """The proposal comment: what the model proposed, how verification went, what is next."""
    attempts = [a for a in state.get("attempts") or [] if isinstance(a, dict)]
    passed = [a for a in attempts if a.get("verdict") == "pass"]
    model = f"model `{state.get('model')}`"
    if passed:
        last = passed[-1]
        lines = [
            f"**patchgate proposed patch `{last.get('patch_id')}`** (issue `{issue}`, {model}): "
            "verified, not landed yet",
            "",
            f"- confidence: {last.get('confidence_score')}",
        ]
        verified = last_event(events, event="verify_pass", patch_id=last.get("patch_id"))
        if verified:
            gates = verified.get("gates") or {}
            verdicts = ", ".join(f"{name}: {v}" for name, v in sorted(gates.items()))
            lines.append(f"- gate verdicts: {verdicts or 'no gate ran'}")
    else:
        lines = [
            f"**patchgate could not propose a passing patch** (issue `{issue}`, {model}): "
            "waiting for an operator",
            "",
        ]
    for a in attempts:
        how = "pass" if a.get("verdict") == "pass" else f"{a.get('stage')}: {a.get('reason')}"
        lines.append(f"- attempt {a.get('n')}: {' '.join(str(how).split())[:300]}")
    if passed:
        lines += ["", f"An operator lands it with `doit promote issue={issue}`."]
    return "\n".join(lines)


def after_propose(
    root: str, issue: str, trigger: str, state: Mapping[str, Any] | None, log: str | None
) -> None:
    """propose's hook: with trigger=github:N, the issue's sticky comment (the one verify and
    the landing write) shows the proposal: its attempts, the verdict, the confidence.

    Only a finished proposal (passed, or waiting for an operator) is commented. Never raises: a
    failing forge is a WARNING line, the proposal stands.
    """
    try:
        number = parse_trigger(trigger)
        if number is None or not state or state.get("state") not in ("passed", "waiting_operator"):
            return
        write_json(trigger_path(root, issue), {"trigger": number})  # for promote
        gh = client(config.load(root, cli={}))
        if gh is None:
            return
        try:
            text = propose_comment(issue, state, provenance.read_events(root))
            _, how = gh.sticky_comment(number, f"patch-{issue}", text)
            if log:
                report.try_log(log, f"forge: proposal comment on #{number} {how}")
        finally:
            gh.close()
    except (PatchgateError, OSError, ValueError, KeyError, TypeError) as exc:
        warn(log, f"the proposal of {issue} was not annotated: {exc}")


def landing_path(root: str, commit: str) -> str:
    return os.path.join(root, STATE_DIR, "landings", f"{commit}.json")


def landing_record(root: str, commit: str) -> dict[str, Any] | None:
    path = landing_path(root, commit)
    if not os.path.exists(path):
        return None
    with contextlib.suppress(OSError, ValueError):
        data: dict[str, Any] = read_json(path)
        return data
    return None


def warn(log: str | None, text: str) -> None:
    """A forge problem that must not fail what called it: one WARNING line."""
    line = f"WARNING: forge: {redact.redact(text)}"
    print(line, flush=True)
    if log:
        report.try_log(log, line)


def landing_comment(
    record: Mapping[str, Any], verified: Mapping[str, Any] | None, confidence: Any, push: str
) -> str:
    """The landing comment: patch id, verdicts, confidence, commit (from the provenance log)."""
    lines = [
        f"**patchgate landed patch `{record['patch_id']}`** (issue `{record['issue']}`)",
        "",
        f"- commit: `{record['commit']}` (push {push})",
    ]
    if verified:
        gates = verified.get("gates") or {}
        verdicts = ", ".join(f"{name}: {verdict}" for name, verdict in sorted(gates.items()))
        lines.append(f"- verification: pass; gate verdicts: {verdicts or 'no gate ran'}")
    if confidence is not None:
        lines.append(f"- confidence: {confidence}")
    lines.append(f"- files: {', '.join(f'`{f}`' for f in record.get('files') or []) or '-'}")
    return "\n".join(lines)


def last_event(events: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = [e for e in events if all(e.get(k) == v for k, v in match.items())]
    return found[-1] if found else None


PR_PREFIX = "patchgate/"


def landing_mode(root: str) -> str:
    """``landing:`` of patchgate.yaml: push (the default) or pull_request."""
    with contextlib.suppress(PatchgateError, OSError, ValueError):
        return str(config.load(root, cli={})["landing"])
    return "push"


def push_branch(ctx: LandingContext) -> str:
    """The branch promote pushes a landed commit to: live's branch, or with
    ``landing: pull_request`` the promotion's own ``patchgate/ISSUE`` (rollbacks push directly)."""
    if ctx.kind == "promote" and landing_mode(ctx.root) == "pull_request":
        return f"{PR_PREFIX}{ctx.issue}"
    return ctx.branch


def after_finish(
    ctx: LandingContext, landed: Mapping[str, Any], pushed: Mapping[str, Any], log: str
) -> None:
    """Every landing's forge hook (``landing.finish_landing``): a promotion annotates its
    trigger, a rollback the original PRs; finalize has none. Never raises."""
    if ctx.kind == "promote":
        after_landing(ctx, landed, pushed, log)
    elif ctx.kind == "rollback":
        after_rollback(ctx, str(landed["commit"]), log)


def after_landing(
    ctx: LandingContext, landed: Mapping[str, Any], pushed: Mapping[str, Any], log: str
) -> None:
    """promote's finish hook: remember the landing; comment on the trigger; a commit status.

    Never raises: a failing forge is a WARNING line, the landing stands.
    """
    try:
        _after_landing(ctx, landed, str(pushed.get("push", "?")), log)
    except (PatchgateError, OSError, ValueError, KeyError, TypeError) as exc:
        warn(log, f"the landing of {landed.get('commit', '?')} was not annotated: {exc}")


def _after_landing(ctx: LandingContext, landed: Mapping[str, Any], push: str, log: str) -> None:
    root = ctx.root
    cfg = config.load(root, cli={})
    commit = str(landed["commit"])
    record: dict[str, Any] = {
        "commit": commit,
        "issue": ctx.issue,
        "patch_id": landed.get("patch_id") or "-",
        "trigger": trigger_of(root, str(ctx.issue), log),
        "files": list(landed.get("files") or []),
        "base_sha": landed.get("old_head"),
    }
    write_json(landing_path(root, commit), record)
    gh = client(cfg)
    if gh is None:
        return
    events = provenance.read_events(root)
    verified = last_event(events, event="verify_pass", patch_id=record["patch_id"])
    proposed = last_event(events, event="propose", issue=ctx.issue)
    confidence = proposed.get("confidence_score") if proposed else None
    try:
        text = landing_comment(record, verified, confidence, push)
        if push == "OK" and push_branch(ctx) != ctx.branch:
            pull = pull_request(gh, root, ctx, record, text, log)
            text += f"\n- pull request: #{pull}"
        if record["trigger"] is not None:
            number = int(record["trigger"])
            _, how = gh.sticky_comment(number, f"patch-{ctx.issue}", text)
            report.try_log(log, f"forge: landing comment on #{number} {how}")
        if gh.settings.commit_status and push == "OK":
            try:
                gh.set_status(commit, "success", f"verified and landed: {ctx.issue}", None)
            except ForgeError as err:
                if err.status not in (403, 404):
                    raise
                warn(log, f"no commit status on {commit[:12]}: the token may not set them")
    finally:
        gh.close()


def pull_request(
    gh: GitHub, root: str, ctx: LandingContext, record: Mapping[str, Any], text: str, log: str
) -> int:
    """``landing: pull_request``: open or update the PR of the pushed branch; record it."""
    head = push_branch(ctx)
    pull, how = gh.open_pull(
        head, ctx.branch, f"patchgate: {ctx.issue} ({record['patch_id']})", text
    )
    number = int(pull["number"])
    events = provenance.read_events(root)
    if last_event(events, event="pull_request", commit_hash=record["commit"]) is None:
        provenance.append_event(
            root,
            {
                "event": provenance.EventKind.PULL_REQUEST,
                "patch_id": record["patch_id"],
                "issue": ctx.issue,
                "commit_hash": record["commit"],
                "pull_request": number,
                "url": str(pull.get("html_url") or ""),
                "head": head,
                "base": ctx.branch,
            },
        )
    redact.tell(log, f"forge: pull request #{number} {how} ({head} -> {ctx.branch})")
    return number


def history_lines(root: str) -> list[str]:
    """``doit history``: pull requests that carried landings, and rollback proposals."""
    lines = []
    for event in provenance.read_events(root):
        if event.get("event") == "rollback_proposed":
            shadow = ", shadow" if event.get("shadow") else ""
            lines.append(
                f"{str(event.get('sha'))[:12]}  rollback proposed ({event.get('source')}{shadow}) "
                f"{event.get('timestamp')}: {event.get('failure_context')}"
            )
        if event.get("event") == "pull_request":
            lines.append(
                f"{str(event.get('commit_hash'))[:12]}  pull request #{event.get('pull_request')}"
                f" ({event.get('head')} -> {event.get('base')}) {event.get('url') or ''}".rstrip()
            )
    return lines


def pull_authors(gh: GitHub, sha: str) -> list[tuple[int, str]]:
    """(number, author login) of the pull requests that brought ``sha``."""
    found = []
    for pr in gh.pulls_of_commit(sha):
        user = pr.get("user") if isinstance(pr.get("user"), dict) else {}
        found.append((int(pr["number"]), str((user or {}).get("login") or "")))
    return found


def mentions(author: str, tags: Sequence[str]) -> str:
    names = [f"@{author}"] if author else []
    names += [t if t.startswith("@") else f"@{t}" for t in tags]
    return " ".join(dict.fromkeys(names))


def proposal_comment(proposal: Mapping[str, Any], author: str, tags: Sequence[str]) -> str:
    failure = proposal.get("failure") or {}
    lines = [
        f"**patchgate proposes rolling back `{proposal['sha']}`** ({proposal['source']})",
        "",
        f"- failure: {proposal.get('failure_context')}",
    ]
    if failure.get("details_url"):
        lines.append(f"- details: {failure['details_url']}")
    lines += [
        "",
        "Nothing has been reverted. An operator confirms with:",
        "",
        "```",
        str(proposal["confirm"]),
        "```",
    ]
    who = mentions(author, tags)
    if who:
        lines += ["", f"cc {who}"]
    return "\n".join(lines)


def annotate_proposal(root: str, proposal: Mapping[str, Any], log: str | None) -> list[str]:
    """Comment a rollback proposal on the PRs of the commit and the triggering issue.

    Returns what was done, one short line each; never raises (WARNING lines instead).
    """
    done: list[str] = []
    try:
        cfg = config.load(root, cli={})
        gh = client(cfg)
        if gh is None:
            return done
        try:
            sha = str(proposal["sha"])
            targets = pull_authors(gh, sha)
            record = landing_record(root, sha)
            if record and record.get("trigger"):
                targets.append((int(record["trigger"]), ""))
            for number, author in dict(targets).items():
                text = proposal_comment(proposal, author, gh.settings.tag_on_rollback)
                _, how = gh.sticky_comment(number, f"rollback-{sha[:12]}", text)
                done.append(f"#{number} {how}")
        finally:
            gh.close()
    except (PatchgateError, OSError, ValueError, KeyError, TypeError) as exc:
        warn(log, f"the rollback proposal of {proposal.get('sha')} was not annotated: {exc}")
    return done


def after_rollback(ctx: LandingContext, commit: str, log: str) -> None:
    """rollback's finish hook: update the proposal comment on the original PRs: it landed."""
    try:
        root = ctx.root
        rb = ctx.rollback or {}
        cfg = config.load(root, cli={})
        gh = client(cfg)
        if gh is None:
            return
        try:
            sha = str(rb["sha"])
            targets = pull_authors(gh, sha)
            record = landing_record(root, sha)
            if record and record.get("trigger"):
                targets.append((int(record["trigger"]), ""))
            proposed = last_event(provenance.read_events(root), event="rollback_proposed", sha=sha)
            failure = rb["failure_context"] or (proposed or {}).get("failure_context")
            for number, author in dict(targets).items():
                who = mentions(author, gh.settings.tag_on_rollback)
                text = "\n".join(
                    [
                        f"**patchgate rolled back `{sha}`** in `{commit}`",
                        "",
                        f"- rollback: {rb['rollback_id']}, confirmed by {rb['operator']}",
                        f"- reason: {rb['reason']}",
                        *([f"- failure: {failure}"] if failure else []),
                        *(["", f"cc {who}"] if who else []),
                    ]
                )
                _, how = gh.sticky_comment(number, f"rollback-{sha[:12]}", text)
                report.try_log(log, f"forge: rollback comment on #{number} {how}")
        finally:
            gh.close()
    except (PatchgateError, OSError, ValueError, KeyError, TypeError) as exc:
        warn(log, f"the rollback {ctx.issue} was not annotated: {exc}")


def parent_of(live: str, sha: str) -> str | None:
    return git.first_parent(live, sha)


MAX_ETAGS = 400


def save_etags(gh: GitHub, path: str) -> None:
    """Keep the newest MAX_ETAGS cached answers between runs (polls of old landings drop out)."""
    kept = list(gh.etags.items())[-MAX_ETAGS:]
    write_json(path, {k: {"etag": v.etag, "data": v.data} for k, v in kept})


def load_etags(gh: GitHub, path: str) -> None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        for key, value in read_json(path).items():
            gh.etags[key] = _Cached(str(value["etag"]), value["data"])


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)

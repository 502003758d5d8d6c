"""doit propose issue=ID request=…: a model proposes a patch, patchgate verifies it and feeds back.

The loop runs in one action (a loop whose length depends on verdicts does not fit a static
task graph). Each attempt N:

1. asks the model (tasks/llm.py) for a reply in schemas/proposal-reply.schema.json, validated
   here; a malformed reply is re-asked up to ``llm.max_requeries`` times (no attempt spent);
   transport errors are llm.py's (no attempt spent either);
2. writes ``patches/ID.aN.diff`` and beside it ``patches/ID.aN.files.json`` (tasks/claims.py):
   the model's ``affected_files`` are the declared FILES, so scope enforces what it claimed;
3. verifies it with the same verify chain in workspace ``issue_ID`` (a child ``doit verify
   patch=patches/ID.aN.diff issue=ID``: only changed steps re-run);
4. on a failure, builds the feedback from patchgate's own records (result.json, gates/*.json,
   JUnit, the gate's output in the verify log), cut to the context budget, and asks again.

It stops when an attempt passes (``RESULT: SUCCESS`` and the promote line: nothing is
promoted without an operator), when there is no progress (the same failure twice, or a patch
repeating an earlier one), or after ``llm.max_retries`` verified attempts (``STAGE: REFINE``,
the workspace waits for an operator). State: ``patches/workspaces/issue_ID/propose.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import claims, config, doitapi, git, jail, journal, lock, proc, provenance, report, steps
from .apply import PATCHES_DIR, check_declared
from .errors import PatchgateError
from .gates import parse_findings, read_junit
from .issue import check_issue
from .llm import ContextTooLong, Endpoint, LlmSettings, Reply
from .schema import SCHEMA_DIR, validate
from .steps import failed_creator, read_json, sha256_file, step, write_json
from .workspace import Workspace

STATE_FILE = "propose.json"
NEEDS = "propose needs issue=ID and request=TEXT (or request=patches/FILE holding it)"
REPLY_SCHEMA = "proposal-reply.schema.json"
# The most of a request file or a context file read (characters).
MAX_REQUEST_CHARS = 200_000
TAIL_LINES = 40
# What a verify summary block says, in the child's output.
SUMMARY_LINE = re.compile(r"^([A-Z][A-Z_]*): (.*)$")
DURATION = re.compile(r"\b\d+(?:\.\d+)?s\b")

SYSTEM_PROMPT = """\
You are a careful software engineer. You change a git repository by writing a patch.
Answer with ONE JSON object and nothing else, matching this JSON Schema:
{schema}
Rules:
- "patch" is a unified diff (as `git diff` writes it: --- a/PATH, +++ b/PATH, @@ hunks) against
  the files exactly as shown; it must apply with `git apply`.
- "affected_files" lists exactly the repository-relative paths the diff changes: no more, no less.
- "confidence_score" is a number from 0 to 1.
- "test_commands" lists extra test commands as argument lists (may be empty).
- Paths never start with / and never contain "..".
"""


@dataclass(frozen=True)
class Proposal:
    """A reply that passed the schema and our own checks."""

    patch: str
    affected_files: list[str]
    explanation: str
    confidence_score: float
    test_commands: list[list[str]]


@dataclass(frozen=True)
class Outcome:
    """What the verify chain said about one attempt's patch."""

    passed: bool
    stage: str
    reason: str
    log: str | None
    files: str


@dataclass(frozen=True)
class Attempt:
    """One row of propose.json's attempts (the cross-helper contract, plus a few extras)."""

    n: int
    patch: str | None
    stage: str
    reason: str
    confidence_score: float | None
    feedback: str | None
    verdict: str
    patch_id: str | None = None
    reply: str | None = None
    affected_files: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data["affected_files"] = list(self.affected_files)
        return data


@dataclass(frozen=True)
class Job:
    """Everything the loop needs, in plain values (the creator reads, the action works)."""

    root: str
    issue: str
    request: str
    request_source: str
    files: tuple[str, ...]
    trigger: str
    live: str
    llm: Mapping[str, Any]
    jail: str
    passthrough: tuple[tuple[str, str], ...]
    log: str


# --- the request and its context -------------------------------------------------------------


def read_request(root: str, raw: str) -> tuple[str, str]:
    """(text, source): a file under patches/ holding the request, or the text as given."""
    inbox = os.path.realpath(os.path.join(root, PATCHES_DIR))
    for candidate in (os.path.join(root, raw), os.path.join(inbox, raw)):
        if len(raw) > 255 or "\n" in raw:
            break
        path = os.path.realpath(candidate)
        if os.path.isfile(path):
            if os.path.commonpath([path, inbox]) != inbox:
                raise PatchgateError(
                    "PREFLIGHT",
                    f"request file {raw} is outside patches/; move it into {PATCHES_DIR}/",
                )
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read(MAX_REQUEST_CHARS + 1)
            if len(text) > MAX_REQUEST_CHARS:
                raise PatchgateError(
                    "PREFLIGHT",
                    f"request file {raw} is longer than {MAX_REQUEST_CHARS} characters; shorten it",
                )
            if not text.strip():
                raise PatchgateError("PREFLIGHT", f"request file {raw} is empty; write the request")
            return text.strip(), os.path.relpath(path, root)
    if not raw.strip():
        raise PatchgateError("PREFLIGHT", "request= is empty; say what the patch should do")
    return raw.strip(), "command line"


PATH_TOKEN = re.compile(r"[A-Za-z0-9_./-]+\.[A-Za-z0-9]+")


def context_files(live: str, base: str, request: str, named: str | None) -> list[str]:
    """The files shown to the model: files=a,b, else the repository paths the request names."""
    tracked = set(git.out(live, "ls-tree", "-r", "--name-only", "-z", base).split("\0")) - {""}
    if named:
        wanted = check_declared([f.strip() for f in named.split(",") if f.strip()], "files=")
        missing = [f for f in wanted if f not in tracked]
        if missing:
            raise PatchgateError(
                "PREFLIGHT",
                f"files= names {', '.join(missing)}, not in live at {base[:12]}; "
                "name files the repository has",
            )
        return wanted
    return sorted({t.strip("./") for t in PATH_TOKEN.findall(request)} & tracked)


def file_at(live: str, base: str, path: str) -> str:
    return git.run(live, "show", f"{base}:{path}", stage="PROPOSE").output


# --- the conversation --------------------------------------------------------------------------


def reply_schema() -> dict[str, Any]:
    with open(os.path.join(SCHEMA_DIR, REPLY_SCHEMA), encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def cut(text: str, limit: int, note: str = "cut to fit the context budget") -> str:
    """``text`` at most ``limit`` characters: its head and tail, a marker between."""
    if len(text) <= limit:
        return text
    if limit < 80:
        return text[: max(limit, 0)]
    marker = f"\n[... {note} ...]\n"
    head = (limit - len(marker)) * 2 // 3
    tail = limit - len(marker) - head
    return f"{text[:head]}{marker}{text[-tail:]}" if tail > 0 else text[:limit]


def build_messages(
    request: str,
    context: Sequence[tuple[str, str]],
    base: str,
    history: Sequence[tuple[str, str]],
    budget: int,
) -> list[dict[str, str]]:
    """System prompt, the request with the files, then (reply, feedback) pairs; ``budget``
    characters in all, the files cut first, then the oldest pairs dropped."""
    schema = json.dumps(reply_schema(), separators=(",", ":"))
    system = SYSTEM_PROMPT.format(schema=schema)
    kept = list(history)
    while kept and sum(len(a) + len(b) for a, b in kept) > budget // 2:
        kept = kept[1:]  # the newest failure matters most
    fixed = len(system) + len(request) + sum(len(a) + len(b) for a, b in kept) + 200
    room = max(budget - fixed, 0)
    share = room // max(len(context), 1)
    parts = [f"Request:\n{request}\n"]
    if context:
        parts.append(f"Files of the repository at commit {base[:12]}:")
        for path, text in context:
            parts.append(f"=== {path} ===\n{cut(text, max(share - len(path) - 10, 0))}")
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n".join(parts)},
    ]
    if len(kept) < len(history):
        messages[1]["content"] += (
            f"\n\n({len(history) - len(kept)} earlier attempt(s) left out to fit the budget)"
        )
    for reply, feedback in kept:
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": feedback})
    return messages


FENCE = re.compile(r"^\s*```[A-Za-z]*\s*\n(?P<body>.*)\n\s*```\s*$", re.S)


def parse_proposal(content: str) -> Proposal:
    """The reply as a Proposal, or a REPLY error saying what is wrong with it."""
    fenced = FENCE.match(content)
    text = fenced["body"] if fenced else content
    try:
        data = json.loads(text)
    except ValueError:
        start = " ".join(content.split())[:60]
        raise PatchgateError(
            "REPLY", f"the model's reply is not JSON (it starts {start!r})"
        ) from None
    validate(data, REPLY_SCHEMA, "REPLY", "the model's reply does not match the schema at")
    patch = data["patch"]
    if not (re.search(r"^--- ", patch, re.M) and re.search(r"^\+\+\+ ", patch, re.M)):
        raise PatchgateError(
            "REPLY", "the model's reply holds no unified diff in patch (no ---/+++ header lines)"
        )
    commands = [
        shlex.split(c) if isinstance(c, str) else [str(a) for a in c] for c in data["test_commands"]
    ]
    return Proposal(
        patch=patch if patch.endswith("\n") else patch + "\n",
        affected_files=[str(f) for f in data["affected_files"]],
        explanation=str(data["explanation"]),
        confidence_score=float(data["confidence_score"]),
        test_commands=[c for c in commands if c],
    )


def requery_message(error: str) -> str:
    return (
        f"That reply was not usable: {error}. Answer again with only the JSON object the "
        "schema describes, with a unified diff in patch."
    )


def ask(
    endpoint: Endpoint,
    settings: LlmSettings,
    build: Callable[[int], list[dict[str, str]]],
    log: Callable[[str], None],
) -> tuple[Reply, Proposal, list[dict[str, str]]]:
    """A valid proposal: malformed replies re-asked, a context refusal shrinks once."""
    budget = settings.context_budget
    messages = build(budget)
    extra: list[dict[str, str]] = []
    shrunk = False
    requeries = 0
    schema = reply_schema()
    while True:
        try:
            reply = endpoint.complete(messages + extra, schema)
        except ContextTooLong as refusal:
            if shrunk:
                raise PatchgateError(
                    "LLM",
                    f"the prompt does not fit the model's context even cut to {budget} "
                    f"characters ({refusal}); lower llm.context_budget or use a model with a "
                    "longer context",
                ) from None
            shrunk = True
            budget //= 2
            log(f"propose: the endpoint refused the prompt as too long; retrying at {budget} chars")
            messages = build(budget)
            continue
        where = "stored reply" if reply.cached else "reply"
        try:
            proposal = parse_proposal(reply.content)
        except PatchgateError as bad:
            if requeries >= settings.max_requeries:
                asked = f" (after {requeries} re-ask(s))" if requeries else ""
                raise PatchgateError(
                    "REPLY",
                    f"{bad.message}{asked}; the model cannot follow the contract: try another "
                    "model, raise llm.max_requeries, or check llm.response_format",
                ) from None
            requeries += 1
            log(f"propose: {where} unusable ({bad.message}); re-asking ({requeries})")
            extra += [
                {"role": "assistant", "content": cut(reply.content, 2000)},
                {"role": "user", "content": requery_message(bad.message)},
            ]
            continue
        return reply, proposal, messages + extra


# --- verifying an attempt ----------------------------------------------------------------------


def child_env(settings: LlmSettings) -> dict[str, str]:
    """patchgate's own environment for the child verify, without the API key."""
    secret = {settings.api_key_env} if settings.api_key_env else set()
    return {k: v for k, v in os.environ.items() if k not in secret}


def last_summary(output: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("RESULT: "):
            fields = {}
        found = SUMMARY_LINE.match(line)
        if found:
            fields[found[1]] = found[2]
    return fields


def run_verify(job: Job, settings: LlmSettings, diff: str) -> Outcome:
    """The verify chain of ``diff`` in workspace issue_ID, as ``doit verify`` runs it."""
    argv = [
        sys.executable,
        "-m",
        "patchgate.propose",
        "verify",
        f"patch={os.path.relpath(diff, job.root)}",
        f"issue={job.issue}",
        *(f"{k}={v}" for k, v in job.passthrough),
    ]
    done = proc.run(argv, cwd=job.root, env=child_env(settings))
    report.log(job.log, f"$ doit {' '.join(shlex.quote(a) for a in argv[3:])}\n{done.output}")
    fields = last_summary(done.output)
    log = os.path.join(job.root, fields["LOG"]) if "LOG" in fields else None
    if done.returncode == 0 and fields.get("RESULT") == "SUCCESS":
        return Outcome(True, "", "", log, fields.get("FILES", ""))
    stage = fields.get("STAGE", "VERIFY")
    reason = fields.get("REASON", f"doit verify exited {done.returncode} without a summary")
    return Outcome(False, stage, reason, log, "")


def gate_output(log: str | None, gate: str) -> str:
    """The output the gate printed, as the verify log recorded it (timings taken out)."""
    if log is None or not os.path.exists(log):
        return ""
    with open(log, encoding="utf-8", errors="replace") as fh:
        text = "\n" + fh.read()
    end = text.rfind(f"[gate {gate}: exit ")
    start = text.rfind(f"\ngate {gate}: ", 0, max(end, 0))
    if end < 0 or start < 0:
        return ""
    body = text[start + 1 : end].split("\n", 1)[1] if "\n" in text[start + 1 : end] else ""
    return DURATION.sub("Ns", body)


def build_feedback(job: Job, n: int, outcome: Outcome, budget: int) -> str:
    """What failed, from patchgate's own records, cut to ``budget`` characters."""
    ws = Workspace(job.root, job.issue)
    lines = [
        f"Attempt {n} failed verification.",
        f"STAGE: {outcome.stage}",
        f"REASON: {outcome.reason}",
    ]
    gate = outcome.reason.split(":", 1)[0].split(" ", 1)[0] if outcome.stage == "GATES" else ""
    record_path = ws.gate_file(gate) if gate else ""
    if gate and os.path.exists(record_path):
        record = read_json(record_path)
        broken = record.get("baseline", {}).get("tests", {}).get("pass->fail")
        with contextlib.suppress(steps.NotReadable):
            tests = read_junit(ws.path("cache", gate, "junit.xml"), ws.repo) or {}
            failing = [(t, m) for t, (o, m) in sorted(tests.items()) if o == "fail"]
            if broken is not None:
                failing = [(t, m) for t, m in failing if t in set(broken)]
                title = "Tests the patch broke (they pass on the base):"
            else:
                title = "Failing tests:"
            if failing:
                lines.append(title)
                lines += [f"- {t}: {m}" if m else f"- {t}" for t, m in failing[:20]]
        output = gate_output(outcome.log, gate)
        found = parse_findings(output)
        new = record.get("baseline", {}).get("new_findings")
        if found:
            lines.append("Findings (path:line: message):")
            for path, where, msg in found[:30]:
                if new is None or any(f"{path}: {msg}" == f for f in new):
                    lines.append(f"- {path}:{where}: {msg}")
        tail = [ln for ln in output.rstrip().splitlines() if ln.strip()][-TAIL_LINES:]
        if tail:
            lines.append(f"Last lines of the output of gate {gate}:")
            lines += tail
    elif outcome.stage in ("APPLY", "PREFLIGHT"):
        lines.append(
            "Write the diff against the files exactly as shown, with repository-relative "
            "paths (--- a/PATH, +++ b/PATH)."
        )
    elif outcome.stage == "SCOPE":
        lines.append("affected_files must list exactly the files the diff changes.")
    lines.append("Reply with a corrected proposal (the whole patch against the original files).")
    return cut("\n".join(lines), max(budget // 4, 400), "feedback cut to fit the context budget")


# --- state -------------------------------------------------------------------------------------


def state_path(root: str, issue: str) -> str:
    return Workspace(root, issue).path(STATE_FILE)


def write_state(job: Job, request_sha: str, state: str, attempts: Sequence[Attempt]) -> None:
    settings = LlmSettings.from_config(job.llm, config.DEFAULTS["llm"][0])
    write_json(
        state_path(job.root, job.issue),
        {
            "issue": job.issue,
            "request_sha256": request_sha,
            "request_source": job.request_source,
            "state": state,
            "attempts": [a.row() for a in attempts],
            "model": settings.model,
            "llm_endpoint": settings.endpoint,
            "trigger": job.trigger,
            "updated": steps.now(),
        },
        "propose-state.schema.json",
    )


def read_state(root: str, issue: str) -> dict[str, Any] | None:
    try:
        data = read_json(state_path(root, issue))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def attempt_table(attempts: Sequence[Attempt]) -> list[str]:
    lines = [f"{'attempt':<8} {'patch':<28} {'stage':<10} reason"]
    for a in attempts:
        patch = os.path.basename(a.patch) if a.patch else "-"
        lines.append(f"{a.n:<8} {patch:<28} {a.stage or 'PASS':<10} {a.reason or 'verified'}")
    return lines


# --- the loop ----------------------------------------------------------------------------------


def run_propose(job: Job) -> dict[str, Any]:
    """Action of propose:ID: ask, verify, feed back, until a pass, no progress or the budget."""
    settings = LlmSettings.from_config(job.llm, config.DEFAULTS["llm"][0])
    base = git.live_head(job.live)
    context = [(f, file_at(job.live, base, f)) for f in job.files]
    request_sha = hashlib.sha256(
        json.dumps(
            {
                "request": job.request,
                "context": context,
                "base": base,
                "llm": settings.identity(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()

    def say(line: str) -> None:
        print(line, flush=True)
        report.log(job.log, line)

    say(
        f"propose: issue {job.issue}, model {settings.model} at {settings.endpoint}, base "
        f"{base[:12]}, {len(context)} context file(s): {', '.join(job.files) or '(none)'}"
    )
    again = passed_before(job, settings, request_sha)
    if again is not None:
        say(
            "propose: this request passed before on this base (propose.json) and its patch "
            "still verifies; the model was not asked"
        )
        return again
    attempts: list[Attempt] = []
    history: list[tuple[str, str]] = []
    write_state(job, request_sha, "running", attempts)
    endpoint = Endpoint(settings, job.root, lambda line: report.log(job.log, line))
    stop = ""
    for n in range(1, settings.max_retries + 1):
        try:
            reply, proposal, _ = ask(
                endpoint,
                settings,
                lambda budget: build_messages(job.request, context, base, history, budget),
                say,
            )
        except PatchgateError as err:
            attempts.append(Attempt(n, None, err.stage, err.message, None, None, "error"))
            write_state(job, request_sha, "waiting_operator", attempts)
            for line in attempt_table(attempts):
                say(line)
            raise
        say(
            f"propose: attempt {n}: {'stored reply' if reply.cached else 'reply'} "
            f"(confidence {proposal.confidence_score:g}) changes "
            f"{', '.join(proposal.affected_files)}"
        )
        earlier = next(
            (a for a in attempts if a.patch and _same_patch(job.root, a.patch, proposal)), None
        )
        diff = os.path.join(job.root, PATCHES_DIR, f"{job.issue}.a{n}.diff")
        if earlier is not None:
            reason = f"attempt {n} repeats the patch of attempt {earlier.n}"
            attempts.append(
                Attempt(n, None, "REFINE", reason, proposal.confidence_score, None, "repeat")
            )
            stop = f"no progress: {reason}"
            break
        if proposal.test_commands and not (settings.allow_test_commands and job.jail == "bwrap"):
            say(
                f"propose: attempt {n}: the model's test_commands are not run "
                "(llm.allow_test_commands is false, or jail is none)"
            )
        patch_id = write_attempt(job, settings, n, diff, proposal)
        record_event(job, settings, n, patch_id, attempts, proposal, reply, request_sha)
        outcome = run_verify(job, settings, diff)
        if outcome.passed:
            attempts.append(
                Attempt(
                    n,
                    os.path.relpath(diff, job.root),
                    "",
                    "",
                    proposal.confidence_score,
                    None,
                    "pass",
                    patch_id,
                    reply.sha256,
                    tuple(proposal.affected_files),
                )
            )
            write_state(job, request_sha, "passed", attempts)
            for line in attempt_table(attempts):
                say(line)
            return success(job, outcome.files, n, proposal.confidence_score)
        feedback = build_feedback(job, n, outcome, settings.context_budget)
        previous = attempts[-1] if attempts else None
        attempts.append(
            Attempt(
                n,
                os.path.relpath(diff, job.root),
                outcome.stage,
                outcome.reason,
                proposal.confidence_score,
                feedback,
                "fail",
                patch_id,
                reply.sha256,
                tuple(proposal.affected_files),
            )
        )
        write_state(job, request_sha, "running", attempts)
        say(f"propose: attempt {n} failed at {outcome.stage}: {outcome.reason}")
        if previous is not None and (previous.stage, previous.reason) == (
            outcome.stage,
            outcome.reason,
        ):
            stop = f"no progress: attempts {previous.n} and {n} failed the same way"
            break
        history.append((reply.content, feedback))
    if not stop:
        stop = f"{settings.max_retries} attempt(s) (llm.max_retries) failed"
    write_state(job, request_sha, "waiting_operator", attempts)
    for line in attempt_table(attempts):
        say(line)
    named = ", ".join(f"a{a.n} {a.stage}" for a in attempts)
    raise PatchgateError(
        "REFINE",
        f"{stop} ({named}); waiting for an operator: see "
        f"{os.path.relpath(state_path(job.root, job.issue), job.root)}, fix the request "
        f"or the patch, or verify one by hand",
    )


def success(job: Job, files: str, n: int, score: float) -> dict[str, Any]:
    return {
        "summary": {
            "RESULT": "SUCCESS",
            "FILES": files,
            "ATTEMPTS": str(n),
            "CONFIDENCE": f"{score:g}",
            "PROMOTE": f"doit promote issue={job.issue}",
        }
    }


def passed_before(job: Job, settings: LlmSettings, request_sha: str) -> dict[str, Any] | None:
    """The success of an earlier run of this very request, if its patch verifies still (the
    verify chain decides what is up to date); None: run the loop."""
    state = read_state(job.root, job.issue)
    if not state or state.get("request_sha256") != request_sha or state.get("state") != "passed":
        return None
    passed = [a for a in state.get("attempts", []) if a.get("verdict") == "pass"]
    if not passed or not passed[-1].get("patch"):
        return None
    diff = os.path.join(job.root, passed[-1]["patch"])
    if not os.path.isfile(diff) or f"{job.issue}@{sha256_file(diff)[:12]}" != passed[-1].get(
        "patch_id"
    ):
        return None
    outcome = run_verify(job, settings, diff)
    if not outcome.passed:
        return None
    return success(job, outcome.files, int(passed[-1]["n"]), float(passed[-1]["confidence_score"]))


def _same_patch(root: str, path: str, proposal: Proposal) -> bool:
    with contextlib.suppress(OSError), open(os.path.join(root, path), encoding="utf-8") as fh:
        return _normal(fh.read()) == _normal(proposal.patch)
    return False


def _normal(patch: str) -> str:
    return "\n".join(ln.rstrip() for ln in patch.strip().splitlines())


def write_attempt(job: Job, settings: LlmSettings, n: int, diff: str, proposal: Proposal) -> str:
    """patches/ID.aN.diff and its claims; the patch id verify will give it."""
    os.makedirs(os.path.dirname(diff), exist_ok=True)
    tmp = f"{diff}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(proposal.patch)
    os.replace(tmp, diff)
    allowed = settings.allow_test_commands and job.jail == "bwrap"
    write_json(
        claims.sidecar_of(diff),
        {
            "files": proposal.affected_files,
            "test_commands": proposal.test_commands if allowed else [],
        },
    )
    return f"{job.issue}@{sha256_file(diff)[:12]}"


def record_event(
    job: Job,
    settings: LlmSettings,
    n: int,
    patch_id: str,
    attempts: Sequence[Attempt],
    proposal: Proposal,
    reply: Reply,
    request_sha: str,
) -> None:
    refines = next((a.patch_id for a in reversed(attempts) if a.patch_id), None)
    provenance.append_event(
        job.root,
        {
            "event": "propose",
            "patch_id": patch_id,
            "issue": job.issue,
            "attempt": n,
            "refines": refines,
            "confidence_score": proposal.confidence_score,
            "llm_endpoint": settings.endpoint,
            "model": settings.model,
            "affected_files": proposal.affected_files,
            "explanation": proposal.explanation[:2000],
            "request_sha256": request_sha,
            "prompt_sha256": reply.request_sha256,
            "reply_sha256": reply.sha256,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "trigger": job.trigger,
        },
    )


# --- hooks for status and promote --------------------------------------------------------------


def status_note(root: str, issue: str) -> str:
    """`doit status`'s words for a proposal in this issue, or ''."""
    state = read_state(root, issue)
    if not state:
        return ""
    return f"  proposal: {state.get('state')} ({len(state.get('attempts', []))} attempt(s))"


def proposals_without_workspace(root: str, listed: set[str]) -> list[str]:
    """Lines for proposals that never reached a verified workspace (the model failed first)."""
    top = os.path.join(root, "patches", "workspaces")
    out = []
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        issue = name.removeprefix("issue_")
        if issue in listed or not os.path.exists(state_path(root, issue)):
            continue
        out.append(f"{issue:<24} -      no workspace{status_note(root, issue)}")
    return out


def confidences(root: str) -> dict[str, float]:
    """patch id -> the confidence_score of the model that proposed it (provenance events)."""
    try:
        with open(provenance.log_path(root), "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    found: dict[str, float] = {}
    for line in data.split(b"\n"):
        if b'"propose"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        score = event.get("confidence_score") if isinstance(event, dict) else None
        if event.get("event") == "propose" and isinstance(score, int | float):
            found[str(event.get("patch_id"))] = float(score)
    return found


def trailer_pairs(ws_dir: str) -> list[tuple[str, str]]:
    """Proposed-by, Confidence, Triggered-by for a workspace whose verified patch a model wrote.

    Triggered-by: promote's own ``trigger=`` if given, else the one propose recorded."""
    trigger = config.variable("trigger")
    ws = Workspace.at(ws_dir)
    state = read_state(ws.root, ws.issue)
    if not state or state.get("state") != "passed" or not os.path.exists(ws.result):
        return []
    passed = [a for a in state.get("attempts", []) if a.get("verdict") == "pass"]
    if not passed or ws.read_result().patch_id != passed[-1].get("patch_id"):
        return []  # the workspace verified something else since
    score = passed[-1].get("confidence_score")
    return [
        ("Proposed-by", f"{state.get('model')} via {state.get('llm_endpoint')}"),
        ("Confidence", f"{score:g}" if isinstance(score, int | float) else "unknown"),
        ("Triggered-by", trigger or state.get("trigger") or f"doit propose issue={ws.issue}"),
    ]


# --- the task creator --------------------------------------------------------------------------


def make_job(root: str, log: str) -> Job:
    cfg = config.load(root)
    issue, raw = config.variable("issue"), config.variable("request")
    if issue is None or raw is None:
        raise PatchgateError("PREFLIGHT", NEEDS)
    check_issue(issue)
    request, source = read_request(root, raw)
    live = cfg.live_repo
    base = git.live_head(live)
    files = context_files(live, base, request, config.variable("files"))
    lock.hold_issue(root, issue, "doit propose")
    own = {"issue", "request", "files", "trigger", "patch"}
    passthrough = tuple(sorted((k, v) for k, v in doitapi.command_line().items() if k not in own))
    return Job(
        root=root,
        issue=issue,
        request=request,
        request_source=source,
        files=tuple(files),
        trigger=config.variable("trigger") or f"doit propose issue={issue}",
        live=live,
        llm=dict(cfg["llm"]),
        jail=cfg["jail"],
        passthrough=passthrough,
        log=log,
    )


def propose_action(job: Job) -> dict[str, Any]:
    return run_propose(job)


def task_propose() -> Iterator[dict[str, Any]]:
    """Ask a model for a patch, verify it, feed back what failed; the operator promotes.

    issue=ID            the issue: attempts are patches/ID.aN.diff, verified in issue_ID
    request=TEXT|FILE   what the patch should do, or a file under patches/ holding it
    files=A,B           files shown to the model (default: the paths the request names)
    trigger=TEXT        who or what asked (the Triggered-by trailer when promoted)
    llm: in patchgate.yaml sets the endpoint and the budgets (docs/propose.md)
    """
    root = os.getcwd()
    issue = config.variable("issue") or "unknown"
    log = report.log_path(root, f"propose_{issue}")
    if config.variable("request") is None:  # another command is running: declare, do nothing
        need = PatchgateError("PREFLIGHT", NEEDS)
        yield failed_creator(f"propose_{issue}", root, log, need)
        return
    try:
        journal.recover_first(root, log)
        steps.require_writable(root)
        job = make_job(root, log)
        warning = jail.preflight(config.load(root)["jail"])
    except PatchgateError as err:
        yield failed_creator(f"propose_{issue}", root, log, err)
        return
    yield step(
        f"propose_{issue}",
        issue,
        propose_action,
        [job],
        root=root,
        log=log,
        stage="PROPOSE",
        doc="ask the model, verify, refine",
        uptodate=[False],
        warning=warning,
    )


def run_doit(argv: Sequence[str]) -> int:
    """doit with patchgate's tasks, in the current folder (the child verify of an attempt)."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import dodo

    return int(DoitMain(ModuleTaskLoader(dodo)).run(list(argv)))


if __name__ == "__main__":
    sys.exit(run_doit(sys.argv[1:]))

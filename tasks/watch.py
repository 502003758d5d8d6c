"""doit watch: after a landing, watch CI (and a metric) and propose a rollback; never revert.

For each landing (an ``apply`` event of ``audit/provenance.jsonl``) younger than
``watch.window_hours``, every poll reads the combined status and the check runs of the landed
commit and of its parent (``tasks/forge.py``), and judges each check of the commit:

* green, or pending (queued, running, cancelled) -> nothing; pending keeps the landing watched;
* red, and the same check red on the parent -> "broken before": not this commit's doing;
* red, and the parent's check still pending -> wait for the parent;
* red, and the parent's check green (or absent) -> suspect. A suspect is *confirmed* by a second
  red: ``watch.reruns`` red runs of the check in a row (a re-run of the same commit), or
  ``watch.consecutive`` red polls in a row. A green run in between starts the count again, so
  a check that flips red/green never proposes.

A confirmed red becomes a rollback *proposal*: the plan ``doit rollback sha=S`` would print
(``revertplan.make_plan``), its token and exact CONFIRM line, and the failure context (check,
conclusion, details URL, first failing test from the check's annotations). It is recorded once
as a provenance event ``rollback_proposed`` (deduplicated through the log: a rerun after a crash
finds it), shown by ``doit status``, and commented on the commit's pull requests and the
triggering issue (``forge.annotate_proposal``). Nothing executes without
``doit rollback sha=S confirm=TOKEN operator=NAME reason="…"``.

Circuit breaker: ``watch.enabled: false`` polls nothing; ``watch.shadow: true`` records the
proposal (``"shadow": true``) and announces it nowhere. A rate limit: once
``watch.max_proposals`` proposals (shadow ones too) were recorded within the last
``watch.proposal_window_hours``, the breaker is open and a further confirmed red is not
proposed: the landing ends ``suppressed`` ("breaker open", one line in the output and in
``doit status``), with no event, no comment and no token; an operator plans that rollback by
hand (``doit rollback sha=S``). ``max_proposals: 0`` sets no limit.

State: ``patches/.state/watch/<sha>.json`` per landing, written atomically after each poll of
it; a killed ``doit watch`` resumes from it. ``doit watch once=1`` polls once; without it, it
polls every ``watch.interval`` seconds until no landing is left in its window.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from . import config, forge, git, monitor, provenance, redact, report, revertplan
from .errors import PatchgateError
from .live import current_branch
from .steps import failed_creator, read_json, step, write_json

STAGE = "WATCH"
WATCH_DIR = os.path.join("patches", ".state", "watch")
TERMINAL = (
    "green",
    "proposed",
    "expired",
    "rolled_back",
    "broken_before",
    "not_revertible",
    "monitored",
    "not_pushed",
    "suppressed",
)


@dataclass(frozen=True)
class WatchSettings:
    enabled: bool
    shadow: bool
    window_hours: float
    interval: float
    reruns: int
    consecutive: int
    max_proposals: int = 3  # within proposal_window_hours; 0: no limit (the breaker's rate)
    proposal_window_hours: float = 24.0


def watch_settings(cfg: config.Config) -> WatchSettings:
    values = {**config.DEFAULTS["watch"][0], **(cfg["watch"] or {})}
    return WatchSettings(
        enabled=bool(values["enabled"]),
        shadow=bool(values["shadow"]),
        window_hours=float(values["window_hours"]),
        interval=float(values["interval"]),
        reruns=int(values["reruns"]),
        consecutive=int(values["consecutive"]),
        max_proposals=int(values["max_proposals"]),
        proposal_window_hours=float(values["proposal_window_hours"]),
    )


@dataclass(frozen=True)
class Landing:
    sha: str
    patch_id: str
    issue: str | None
    landed_at: float
    push: str = "OK"  # the apply event's: a commit never pushed has no CI on the forge


@dataclass(frozen=True)
class Failure:
    """Why a rollback is proposed: a red check, or a metric's breaches."""

    source: str  # "ci" | "metrics"
    check: str
    conclusion: str
    details_url: str | None = None
    first_failing_test: str | None = None

    def context(self) -> str:
        text = f"{self.source}: {self.check}: {self.conclusion}"
        if self.details_url:
            text += f" ({self.details_url})"
        if self.first_failing_test:
            text += f"; first failing test: {self.first_failing_test}"
        return text


@dataclass
class CheckMemory:
    """What earlier polls saw of one check of the commit."""

    red_runs: list[int] = field(default_factory=list)  # distinct red runs in a row
    consecutive: int = 0  # red polls in a row
    last: str = "pending"


@dataclass
class WatchState:
    sha: str
    parent: str | None
    patch_id: str
    state: str = "watching"  # the landing's: watching until CI and the metric are done
    ci: str = "watching"  # CI: watching | green | broken_before | expired | not_pushed
    polls: int = 0
    errors: int = 0
    last_error: str | None = None
    checks: dict[str, CheckMemory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WatchState:
        checks = {k: CheckMemory(**v) for k, v in (data.get("checks") or {}).items()}
        return cls(**{**data, "checks": checks})


@dataclass(frozen=True)
class Verdict:
    confirmed: tuple[str, ...] = ()
    suspect: tuple[str, ...] = ()
    broken_before: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()  # pending on the commit or on the parent
    green: tuple[str, ...] = ()

    @property
    def all_green(self) -> bool:
        return bool(self.green) and not (
            self.confirmed or self.suspect or self.broken_before or self.waiting
        )


# --- judging one poll (pure) -----------------------------------------------------------------


def evaluate(
    commit: dict[str, forge.Check],
    parent: dict[str, forge.Check],
    memory: dict[str, CheckMemory],
    settings: WatchSettings,
) -> Verdict:
    """Judge the commit's checks against the parent's; update ``memory`` (see the docstring)."""
    out: dict[str, list[str]] = {
        k: [] for k in ("confirmed", "suspect", "broken_before", "waiting", "green")
    }
    for name, check in sorted(commit.items()):
        mem = memory.setdefault(name, CheckMemory())
        if check.verdict == "pending":
            out["waiting"].append(name)
            continue
        if check.verdict == "green":
            mem.red_runs, mem.consecutive, mem.last = [], 0, "green"
            out["green"].append(name)
            continue
        before = parent.get(name)
        if before is not None and before.verdict == "red":
            mem.consecutive, mem.last = 0, "broken_before"
            out["broken_before"].append(name)
            continue
        if before is not None and before.verdict == "pending":
            out["waiting"].append(name)
            continue
        mem.consecutive += 1
        mem.last = "red"
        if check.red_streak:  # the forge's own list of runs: authoritative
            mem.red_runs = list(check.red_streak)
        elif check.run_id is not None and check.run_id not in mem.red_runs:
            mem.red_runs.append(check.run_id)
        if len(mem.red_runs) >= settings.reruns or mem.consecutive >= settings.consecutive:
            out["confirmed"].append(name)
        else:
            out["suspect"].append(name)
    return Verdict(**{k: tuple(v) for k, v in out.items()})


# --- landings and state ----------------------------------------------------------------------


def parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def open_states(root: str) -> set[str]:
    """Landings whose state file says they are still watched (so a late poll can end them)."""
    found = set()
    folder = os.path.join(root, WATCH_DIR)
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".json") and len(name) == 45:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if read_json(os.path.join(folder, name)).get("state") == "watching":
                    found.add(name[:40])
    return found


def landings(
    root: str, now: float, window_hours: float, also: set[str] | None = None
) -> list[Landing]:
    """The landings (apply events) younger than the window, and those in ``also``, oldest
    first, one per commit."""
    found: dict[str, Landing] = {}
    also = also or set()
    for event in provenance.read_events(root):
        if event.get("event") != "apply" or not isinstance(event.get("commit_hash"), str):
            continue
        try:
            when = parse_time(str(event["timestamp"]))
        except (KeyError, ValueError):
            continue
        if now - when <= window_hours * 3600 or event["commit_hash"] in also:
            sha = event["commit_hash"]
            issue = event.get("issue")
            found.setdefault(
                sha,
                Landing(
                    sha,
                    str(event.get("patch_id") or "-"),
                    str(issue) if issue else None,
                    when,
                    str(event.get("push") or "OK"),
                ),
            )
    return list(found.values())


def state_path(root: str, sha: str) -> str:
    return os.path.join(root, WATCH_DIR, f"{sha}.json")


def load_state(root: str, landing: Landing, live: str) -> WatchState:
    path = state_path(root, landing.sha)
    if os.path.exists(path):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return WatchState.from_dict(read_json(path))
    return WatchState(landing.sha, forge.parent_of(live, landing.sha), landing.patch_id)


def save_state(root: str, state: WatchState) -> None:
    write_json(state_path(root, state.sha), asdict(state))


def proposals(root: str) -> list[dict[str, Any]]:
    return [e for e in provenance.read_events(root) if e.get("event") == "rollback_proposed"]


@contextlib.contextmanager
def watch_lock(root: str) -> Iterator[None]:
    """One ``doit watch`` at a time (a second one says so and stops); promotions never wait."""
    path = os.path.join(root, WATCH_DIR, "watch.lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PatchgateError(
                STAGE,
                "another doit watch is running on this project; let it finish or stop it "
                "(its state survives), then run doit watch again",
            ) from None
        yield
    finally:
        os.close(fd)


# --- the proposal ----------------------------------------------------------------------------


def propose(
    root: str,
    cfg: config.Config,
    landing: Landing,
    failure: Failure,
    shadow: bool,
    log: str,
) -> dict[str, Any]:
    """The rollback proposal of ``landing`` (recorded once; annotated unless shadow)."""
    for earlier in proposals(root):
        if earlier.get("sha") == landing.sha:
            say(log, f"watch: {landing.sha[:12]}: a rollback was already proposed; not again")
            return earlier
    live = cfg.live_repo
    head = git.live_head(live)
    branch = current_branch(live, cfg["branch"])
    commit = revertplan.inspect_commit(live, landing.sha, head, branch)
    plan, _ = revertplan.make_plan(root, live, commit, head, branch)
    token = plan["token"] or "-"
    confirm = (
        revertplan.confirm_line(landing.sha, plan["token"])
        if plan["token"]
        else f"doit rollback sha={landing.sha}"
    )
    event: dict[str, Any] = {
        "event": provenance.EventKind.ROLLBACK_PROPOSED,
        "patch_id": landing.patch_id,
        "sha": landing.sha,
        "token": token,
        "confirm": confirm,
        "source": failure.source,
        "failure_context": failure.context(),
        "failure": {
            "check": failure.check,
            "conclusion": failure.conclusion,
            "details_url": failure.details_url,
            "first_failing_test": failure.first_failing_test,
        },
        "shadow": shadow,
    }
    if landing.issue:
        event["issue"] = landing.issue
    written = provenance.append_event(root, event)
    mode = " (shadow: recorded only)" if shadow else ""
    say(log, f"watch: {landing.sha[:12]}: ROLLBACK PROPOSED{mode}: {failure.context()}")
    for line in revertplan.plan_lines(plan):
        say(log, f"  {line}")
    if not shadow:
        for done in forge.annotate_proposal(root, written, log):
            report.try_log(log, f"watch: proposal comment {done}")
    return written


def breaker_open(root: str, settings: WatchSettings, now: float) -> str | None:
    """Why the breaker's rate limit stops a new proposal now, or None (see the docstring)."""
    if settings.max_proposals <= 0:
        return None
    since = now - settings.proposal_window_hours * 3600
    recent = 0
    for event in proposals(root):
        with contextlib.suppress(KeyError, ValueError, TypeError, AttributeError):
            recent += parse_time(str(event["timestamp"])) >= since
    if recent < settings.max_proposals:
        return None
    return (
        f"{recent} rollback proposal(s) in the last {settings.proposal_window_hours:g} h reached "
        f"watch.max_proposals ({settings.max_proposals})"
    )


def say(log: str, text: str) -> None:
    redact.tell(log, text)


# --- one poll of one landing -----------------------------------------------------------------


def poll_ci(
    gh: forge.GitHub, state: WatchState, settings: WatchSettings, log: str
) -> Failure | None:
    """Poll CI of the commit and its parent; update ``state``; a confirmed failure or None."""
    commit = forge.checks_of(gh, state.sha)
    parent = forge.checks_of(gh, state.parent) if state.parent else {}
    verdict = evaluate(commit, parent, state.checks, settings)
    short = state.sha[:12]
    if verdict.broken_before:
        note = f"broken before: {', '.join(verdict.broken_before)} red on the parent too"
        if note not in state.notes:
            state.notes.append(note)
        say(log, f"watch: {short}: {note}; not this commit's doing")
    for name in verdict.suspect:
        mem = state.checks[name]
        say(
            log,
            f"watch: {short}: suspect: {name} red ({len(mem.red_runs)} of {settings.reruns} "
            f"runs, {mem.consecutive} of {settings.consecutive} polls); waiting for a "
            "confirmation",
        )
    if verdict.confirmed:
        check = commit[verdict.confirmed[0]]
        return Failure(
            "ci",
            check.name,
            check.conclusion,
            check.details_url,
            forge.first_failing_test(gh, check),
        )
    if verdict.all_green:
        state.ci = "green"
        say(log, f"watch: {short}: all {len(verdict.green)} checks green")
    elif verdict.broken_before and not (verdict.suspect or verdict.waiting):
        state.ci = "broken_before"
    elif verdict.waiting or not commit:
        say(log, f"watch: {short}: waiting ({', '.join(verdict.waiting) or 'no checks yet'})")
    return None


def poll_landing(
    root: str,
    cfg: config.Config,
    gh: forge.GitHub | None,
    landing: Landing,
    settings: WatchSettings,
    msettings: monitor.MonitorSettings,
    now: float,
    log: str,
) -> str:
    """Poll one landing (CI, and the metric when monitoring is on); returns its state."""
    live = cfg.live_repo
    state = load_state(root, landing, live)
    if state.state in TERMINAL:
        return state.state
    for event in provenance.read_events(root):  # the log decides, whatever this file says
        kind = event.get("event")
        if kind == "rollback" and event.get("reverted_commit") == landing.sha:
            state.state = "rolled_back"
        elif kind == "rollback_proposed" and event.get("sha") == landing.sha:
            state.state = "proposed"  # e.g. a crash after the event, before this file
    if state.state in TERMINAL:
        save_state(root, state)
        return state.state
    in_window = now - landing.landed_at <= settings.window_hours * 3600
    state.polls += 1
    failure: Failure | None = None
    if gh is not None and state.ci == "watching" and landing.push != "OK":
        state.ci = "not_pushed"
        say(log, f"watch: {landing.sha[:12]}: push {landing.push}: the forge's CI never saw it")
    if gh is not None and state.ci == "watching" and in_window:
        try:
            failure = poll_ci(gh, state, settings, log)
            state.last_error = None
        except forge.ForgeError as err:
            if not err.transient:
                raise
            state.errors += 1
            state.last_error = err.message
            say(log, f"watch: {landing.sha[:12]}: inconclusive poll: {err.message}")
    if gh is not None and state.ci == "watching" and not in_window:
        state.ci = "expired"
        why = f" (last forge error: {state.last_error})" if state.last_error else ""
        say(log, f"watch: {landing.sha[:12]}: CI window ended without a verdict{why}")
    metrics_open = False
    if msettings.enabled and failure is None:
        outcome = monitor.poll(
            root, landing.sha, landing.patch_id, landing.landed_at, msettings, now, log
        )
        metrics_open = not outcome.done
        if outcome.failure is not None:
            failure = Failure("metrics", *outcome.failure)
    limit = breaker_open(root, settings, now) if failure is not None else None
    if failure is not None and limit is not None:
        state.state = "suppressed"
        state.notes.append(f"breaker open: {failure.context()}; not proposed: {limit}")
        say(
            log,
            f"watch: {landing.sha[:12]}: BREAKER OPEN: not proposed: {failure.context()}; {limit} "
            f"— look at it and plan the rollback by hand: doit rollback sha={landing.sha}",
        )
    elif failure is not None:
        try:
            propose(root, cfg, landing, failure, settings.shadow, log)
            state.state = "proposed"
        except PatchgateError as err:
            state.state = "not_revertible"
            state.notes.append(err.message)
            say(log, f"watch: {landing.sha[:12]}: no proposal: {err.message}")
    elif not metrics_open and (gh is None or state.ci != "watching"):
        state.state = state.ci if gh is not None else "monitored"
    save_state(root, state)
    return state.state


# --- the command -----------------------------------------------------------------------------


def run(root: str, once: bool, log: str) -> dict[str, Any]:
    """Action of doit watch: poll until nothing is left in its window (once: one poll)."""
    cfg = config.load(root, cli={})
    settings = watch_settings(cfg)
    msettings = monitor.monitor_settings(cfg)
    if not settings.enabled:
        line = "watch: disabled (watch.enabled: false): nothing polled, nothing proposed"
        say(log, line)
        return {"summary": {"RESULT": "SUCCESS", "NOTE": line}}
    gh = forge.client(cfg)
    if gh is None and not msettings.enabled:
        raise PatchgateError(
            STAGE,
            "doit watch needs a forge (forge: repository OWNER/NAME in patchgate.yaml) or "
            "monitoring (monitoring: enabled: true); neither is configured",
        )
    etag_file = os.path.join(root, WATCH_DIR, "etags.json")
    polls = 0
    states: dict[str, str] = {}
    with watch_lock(root):
        if gh is not None:
            forge.load_etags(gh, etag_file)
        try:
            while True:
                now = time.time()
                window = settings.window_hours if gh is not None else 0.0
                if msettings.enabled:
                    window = max(window, msettings.window_hours)
                active = [
                    landing
                    for landing in landings(root, now, window, open_states(root))
                    if states.get(landing.sha) not in TERMINAL
                ]
                for landing in active:
                    states[landing.sha] = poll_landing(
                        root, cfg, gh, landing, settings, msettings, now, log
                    )
                if gh is not None:
                    forge.save_etags(gh, etag_file)
                polls += 1
                left = [s for s in states.values() if s not in TERMINAL]
                if once or not left:
                    break
                time.sleep(settings.interval)
        finally:
            if gh is not None:
                gh.close()
    proposed = sum(1 for s in states.values() if s == "proposed")
    suppressed = sum(1 for s in states.values() if s == "suppressed")
    if not states:
        say(log, f"watch: no landing in the last {settings.window_hours:g} h")
    summary = {
        "RESULT": "SUCCESS",
        "WATCHED": str(len(states)),
        "PROPOSED": str(proposed),
        "WAITING": str(sum(1 for s in states.values() if s not in TERMINAL)),
    }
    if suppressed:
        summary["SUPPRESSED"] = str(suppressed)
    return {"summary": summary}


def status_lines(root: str) -> list[str]:
    """Open rollback proposals for ``doit status`` (proposed, not rolled back yet)."""
    try:
        events = provenance.read_events(root)
        reverted = {e.get("reverted_commit") for e in events if e.get("event") == "rollback"}
        lines = []
        for event in events:
            if event.get("event") != "rollback_proposed" or event.get("sha") in reverted:
                continue
            mode = ", shadow" if event.get("shadow") else ""
            lines.append(
                f"rollback proposed ({event.get('source')}{mode}): {str(event.get('sha'))[:12]} "
                f"{event.get('failure_context')}"
            )
            lines.append(f"  CONFIRM: {event.get('confirm')}")
        return lines + suppressed_lines(root, reverted)
    except (OSError, ValueError) as exc:
        return [f"rollback proposals unreadable: {exc}"]


def suppressed_lines(root: str, reverted: set[Any]) -> list[str]:
    """Confirmed reds the breaker did not propose (landings ``suppressed``, not rolled back)."""
    lines = []
    folder = os.path.join(root, WATCH_DIR)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith(".json") or len(name) != 45 or name[:40] in reverted:
            continue
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            data = read_json(os.path.join(folder, name))
            if data.get("state") == "suppressed":
                note = next((n for n in reversed(data.get("notes") or []) if "breaker" in n), "")
                lines.append(f"rollback suppressed ({note or 'breaker open'}): {name[:12]}")
                lines.append(f"  PLAN: doit rollback sha={name[:40]}")
    return lines


def task_watch() -> Iterator[dict[str, Any]]:
    """Watch CI (and a metric) of recent landings; propose rollbacks; never revert.

    once=1        poll once and stop (default: every watch.interval until the window ends)
    See watch: / monitoring: / forge: in doit config and docs/forge-and-watch.md.
    """
    root = os.getcwd()
    log = report.log_path(root, "watch")
    try:
        raw = (config.variable("once") or "0").strip().lower()
        if raw not in config.TRUE_WORDS + config.FALSE_WORDS:
            raise PatchgateError("PREFLIGHT", f"once={raw} is not a yes/no value; use once=1")
        cfg = config.load(root)
        forge.settings(cfg)
        monitor.monitor_settings(cfg)
    except PatchgateError as err:
        yield failed_creator("watch", root, log, err)
        return
    yield step(
        "watch",
        "watch",
        run,
        [root, raw in config.TRUE_WORDS, log],
        root=root,
        log=log,
        stage=STAGE,
        doc="poll CI and metrics of recent landings; propose rollbacks",
        uptodate=[False],
    )

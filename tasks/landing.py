"""The landing pipeline: what every kind of landing (promote, finalize, rollback) shares.

A landing puts a verified tree on live's branch as one commit — a journaled copy of the changed
files, the live gates, ``commit-tree`` of exactly that tree, ``update-ref`` checked against the
old HEAD — then pushes it, records it in the provenance log, and runs the audit command. The
kinds differ only in what they verify first and what they record; see ``LandingKind``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from . import config, faults, forge, git, jail, lock, post_audit, proc, provenance, redact
from .errors import PatchgateError
from .gates import expand, expects_junit, gate_env, junit_path, matching, verdict_of
from .journal import (
    JOURNAL,
    JOURNAL_SCHEMA,
    check_copied,
    complete,
    journal_path,
    open_journal,
    put,
    recover,
    same_image,
    undo,
)
from .live import current_branch, first_problem, remote_access, remote_url
from .settings import Settings, settings_of
from .steps import failed_creator, read_json, write_json
from .workspace import Workspace

STATE_DIR = os.path.join("patches", ".state")


def hash_tree(root: str, live: str, head: str, paths: Sequence[str]) -> str:
    """The tree of HEAD with ``paths`` as they are in live's working tree (a private index)."""
    index = os.path.join(root, STATE_DIR, f"promote-{os.getpid()}.index")
    return git.tree_with(live, index, head, paths, "PROMOTE")


def land_changes(
    *,
    root: str,
    live: str,
    branch: str,
    head: str,
    changes: list[dict[str, Any]],
    tree: str,
    message: str,
    kind: str,
    label: str,
    record_path: str,
    record: dict[str, Any],
    log: str,
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Copy ``changes`` into live, check, commit ``tree`` on ``head``; on failure undo all.

    The commit is made with plumbing, so what lands is the verified tree object itself:
    ``tree`` is ``head``'s tree plus ``changes`` (the workspace started from ``head``), the
    copied files are checked against their blobs, commit-tree makes the commit, update-ref
    moves the branch only if it still points at ``head``. Live's index gets those paths only;
    the user's other staged or unstaged work is never read, stashed or written. No cost grows
    with the size of live. Hooks do not run: the gates are this repository's hooks.
    """
    journal = open_journal(
        root, live, branch, head, changes, tree, kind, label, record_path, record
    )
    redact.log(log, f"{kind}: journal {JOURNAL}: {len(changes)} path(s) on {head[:12]}")
    committed = False
    try:
        for entry in journal["paths"]:
            if not same_image(entry["pre"], entry["post"]):
                put(live, entry["path"], entry["post"])
                faults.point(f"{kind}-put:{entry['path']}")
        faults.point(f"{kind}-copied")
        if before_commit is not None:
            before_commit()
        check_copied(live, journal)
        commit = git.commit_tree(live, tree, head, message, "PROMOTE")
        faults.point(f"{kind}-commit-made")
        git.update_ref(
            live, f"refs/heads/{branch}", commit, head, f"patchgate {kind}: {label}", "PROMOTE"
        )
        committed = True
        faults.point(f"{kind}-ref-moved")
        journal.update(phase="committed", commit=commit)
        write_json(journal_path(root), journal, JOURNAL_SCHEMA)
        faults.point(f"{kind}-committed")
        complete(root, live, journal)
    except OSError as exc:
        if committed:
            raise
        undo(live, journal)
        os.unlink(journal_path(root))
        raise PatchgateError(
            "PROMOTE",
            f"could not write {exc.filename or 'a file'} in live ({exc.strerror}); "
            "live was restored, nothing was committed",
        ) from exc
    except BaseException:
        if not committed:
            count = undo(live, journal)
            os.unlink(journal_path(root))
            redact.log(log, f"{kind}: live restored ({count} path(s) back to their pre-image)")
        raise
    return commit


# What the live gates may not see: patchgate's own state, when live is the project folder.
PATCHGATE_STATE = ("patches", "audit")


@dataclass(frozen=True)
class LiveGateScratch(Workspace):
    """Stands in for the workspace when a live gate's ``{cache}`` and ``{junit}`` are filled in.

    Its folder is private to one promotion and outside live: nothing the workspace's patch wrote
    (its cache) is reused, and nothing a live gate writes reaches live or a workspace.
    """

    @property
    def dir(self) -> str:
        return self.root


@contextlib.contextmanager
def live_gate_scratch(live: str, issue: str) -> Iterator[LiveGateScratch]:
    scratch = tempfile.mkdtemp(prefix="patchgate-live-gates-")
    try:
        if jail.contains(live, scratch):
            raise PatchgateError(
                "LIVE_GATES",
                f"the temporary folder {scratch} is inside live; set TMPDIR to a folder "
                "outside live and promote again",
            )
        yield LiveGateScratch(scratch, issue)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


Signature = tuple[str, int, int, int, int, int]


def live_files(live: str, hidden: Sequence[str]) -> dict[str, Signature | None]:
    """Every path git status lists in live — modified, untracked and ignored ones, each file on
    its own — with its status code and lstat signature (mode, size, mtime, ctime, inode).

    A write anywhere in live changes this: a new or deleted file adds or drops a path, a rewrite
    of an already-modified or ignored file changes its signature (ctime even when the mtime is
    set back). ``hidden`` (patchgate's state in live) is left out: patchgate writes its log there.
    """
    excludes = [
        f":(top,exclude,literal){os.path.relpath(path, live)}"
        for path in hidden
        if jail.contains(live, path) and os.path.realpath(path) != os.path.realpath(live)
    ]
    fields = git.status_z(
        live, "--untracked-files=all", "--ignored", paths=(":(top)", *excludes), literal=False
    ).split("\0")
    found: dict[str, Signature | None] = {}
    renamed = False
    for entry in fields:
        if renamed:  # the original path of a rename or copy, after its new path
            renamed = False
            continue
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        renamed = code[0] in "RC"
        try:
            st = os.lstat(os.path.join(live, path))
        except OSError:
            found[path] = None
            continue
        found[path] = (code, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return found


def run_live_gates(
    ws: Workspace, ctx: LandingContext, changes: list[dict[str, Any]], log: str
) -> dict[str, str]:
    """The live gates, on live with the promoted files in place, before the commit.

    Jailed like any gate (jail: none runs them unjailed, with its warning), and judging only:
    live's working tree is the jail's read-only workdir, its .git and patchgate's own state
    (patches/, audit/ when live is the project folder) hidden. A gate writes only to a private
    folder outside live (``{cache}``, ``{junit}``) and its /tmp. Should anything in live change
    all the same (jail: none), the gate fails: live gates check, they do not fix.
    """
    live, settings = ctx.live, ctx.settings
    hidden = tuple(os.path.join(ctx.root, name) for name in PATCHGATE_STATE)
    verdicts: dict[str, str] = {}
    before = live_files(live, hidden)
    with live_gate_scratch(live, ctx.issue) as scratch:
        for gate in ctx.live_gates:
            name = gate.name
            files = matching(gate, changes)
            if not files and not settings.all_gates:
                why = f"no promoted file matches {', '.join(gate.files)}"
                redact.log(log, f"live gate {name}: skipped ({why})")
                verdicts[name] = "skipped"
                continue
            os.makedirs(scratch.path("cache", name), exist_ok=True)
            junit = junit_path(scratch, name) if expects_junit(gate) else None
            argv = expand(gate, files, scratch, settings)
            redact.log(log, f"live gate {name}: {' '.join(argv)}")
            done = jail.run_jailed(
                settings,
                live,
                argv,
                timeout=gate.timeout,
                env=gate_env(gate, scratch, settings),
                writable=(scratch.path("cache"),),
                workdir_readonly=True,
                hidden=hidden,
            )
            redact.log(
                log,
                f"{done.output}[live gate {name}: exit {done.returncode}, {done.duration:.2f}s]",
            )
            verdict, reason = verdict_of(gate, done, junit, live)
            verdicts[name] = verdict
            after = live_files(live, hidden)
            if after != before:
                touched = sorted(
                    p for p in before.keys() | after.keys() if before.get(p) != after.get(p)
                )
                raise PatchgateError(
                    "LIVE_GATES",
                    f"live gate {name} changed live ({', '.join(touched[:5])}); live gates must "
                    "only check — the promotion was undone and nothing was committed, but what "
                    "the gate wrote outside the promoted files is still there: look at those paths",
                )
            if verdict == "fail":
                raise PatchgateError(
                    "LIVE_GATES",
                    f"live gate {reason}; live was restored exactly and nothing was "
                    "committed — fix the patch (or live) and promote again",
                )
            redact.log(log, f"live gate {name}: pass")
    write_json(os.path.join(ctx.state, "live-gates.json"), verdicts)
    return verdicts


def push(
    live: str, remote: str | None, branch: str, commit: str, timeout: float, log: str
) -> tuple[str, str]:
    """Push ``commit`` to ``remote``/``branch``: ("OK"|"FAIL"|"SKIPPED", what happened)."""
    if not remote:
        return "SKIPPED", "no remote configured (remote: null)"
    url = remote_url(live, remote)
    if url is None:
        return "SKIPPED", f"live has no remote named {remote}"
    options, env = remote_access(url)
    redact.log(log, f"push: {commit[:12]} to {remote} ({url}) as {branch}")
    done = git.push(live, options, remote, f"{commit}:refs/heads/{branch}", env, timeout)
    redact.log(log, f"{done.output}[push: exit {done.returncode}]")
    if done.returncode == 0:
        return "OK", f"pushed {commit[:12]} to {remote}/{branch}"
    why = "timed out" if done.timed_out else first_problem(done.output)
    return "FAIL", redact.redact(f"push to {remote} ({url}) failed: {why}")


def push_landed(ws_dir: str, ctx: LandingContext, log: str) -> None:
    """Action of the push step (promote and finalize): PUSH: OK | FAIL | SKIPPED."""
    announce(ctx, log)
    landed = read_json(os.path.join(ctx.state, "land.json"))
    commit = landed["commit"]
    branch = forge.push_branch(ctx)  # issue 15: landing: pull_request pushes a branch of its own
    state, detail = push(ctx.live, ctx.remote, branch, commit, float(ctx.git_timeout), log)
    write_json(
        os.path.join(ctx.state, "push.json"), {"push": state, "detail": detail, "commit": commit}
    )
    redact.tell(log, f"push: {state} ({detail})")
    if state == "FAIL" and ctx.require_push:
        raise PatchgateError(
            "PUSH",
            f"{detail}; the commit {commit[:12]} stays in live — push it by hand "
            f"(git -C {ctx.live} push {ctx.remote} {commit[:12]}:refs/heads/"
            f"{ctx.branch}), then run {ctx.rerun} to finish",
        )


def push_note(ctx: LandingContext, pushed: dict[str, Any]) -> str | None:
    if pushed["push"] != "FAIL":
        return None
    return (
        f"{pushed['detail']}; the commit stays — push by hand: git -C {ctx.live} push "
        f"{ctx.remote} {pushed['commit'][:12]}:refs/heads/{ctx.branch}"
    )


def run_audit(ctx: LandingContext, commit: str, push_state: str, log: str) -> None:
    argv = list(ctx.audit_command or [])
    if not argv:
        return
    redact.log(log, f"audit: {' '.join(argv)} (in {ctx.live}, unjailed)")
    done = proc.run(argv, cwd=ctx.live, env=proc.clean_env(), timeout=float(ctx.gate_timeout))
    redact.log(log, f"{done.output}[audit: exit {done.returncode}, {done.duration:.2f}s]")
    if done.timed_out or done.returncode != 0:
        why = (
            f"timed out after {ctx.gate_timeout:g}s"
            if done.timed_out
            else f"exit {done.returncode}: {first_problem(done.output)}"
        )
        raise PatchgateError(
            "AUDIT",
            f"the audit command failed ({why}); the commit {commit[:12]} stays "
            f"(push: {push_state}) — fix what the audit reports",
        )


def announce(ctx: LandingContext, log: str) -> None:
    """What the setup task did (recovery, fast-forward); only the first step has notes."""
    for note in ctx.notes:
        redact.tell(log, f"{ctx.kind}: {note}")


def record_apply(
    root: str,
    ctx: LandingContext,
    landed: dict[str, Any],
    pushed: dict[str, Any],
    trigger: str,
    issue: str | None = None,
) -> None:
    """The provenance `apply` event of a landed commit (promote and finalize)."""
    event: dict[str, Any] = {
        "event": provenance.EventKind.APPLY,
        "patch_id": landed["patch_id"],
        "commit_hash": landed["commit"],
        "operator_confirmed": bool(ctx.operator_confirmed),
        "push": pushed["push"],
        "files": landed["files"],
        "trigger": trigger,
        "base_sha": landed["old_head"],
    }
    if issue is not None:
        event["issue"] = issue
    if ctx.operator:
        event["operator"] = ctx.operator
    provenance.append_event(root, event)


def landed_summary(
    ctx: LandingContext, landed: dict[str, Any], pushed: dict[str, Any]
) -> dict[str, str]:
    """The summary of a landed commit (promote and finalize)."""
    summary = {
        "RESULT": "SUCCESS",
        "FILES": ", ".join(landed["files"]),
        "COMMIT": landed["commit"],
        "PUSH": pushed["push"],
    }
    note = push_note(ctx, pushed)
    if note:
        summary["NOTE"] = redact.redact(note)
    return summary


def remove_workspace(live: str, ws: Workspace, log: str) -> None:
    with lock.worktrees(ws.root):  # see lock.worktrees
        git.remove_worktree(live, ws.repo)
    faults.point("promote-worktree-removed")
    shutil.rmtree(ws.dir, ignore_errors=True)
    redact.log(log, f"promote: workspace {os.path.relpath(ws.dir, ws.root)} removed")


# --- what a landing knows: the context, built once from the configuration ---------------------


@dataclass(frozen=True)
class LandingContext:
    """The plain values every step of one landing needs (picklable for doit -P process)."""

    kind: str  # promote | finalize | rollback: the log prefix and the task basename
    root: str
    issue: str
    live: str
    branch: str
    state: str  # this landing's state folder (land.json, push.json, ...)
    rerun: str  # the command that picks this landing up again
    remote: str | None
    require_push: bool
    keep: bool
    message: str | None
    commit_message: str
    operator: str | None
    operator_confirmed: bool
    co_authored_by: str | None
    live_gates: tuple[config.Gate, ...]
    gates: tuple[config.Gate, ...]
    settings: Settings
    audit_command: tuple[str, ...]
    gate_timeout: float
    git_timeout: float
    notes: tuple[str, ...] = ()  # what the setup task did (recovery, fetch): the first step shows
    rollback: dict[str, Any] | None = None  # the confirmed rollback (rollback only)
    audit_after_promote: bool = True  # doit audit's check after a promotion (issue 11)

    @property
    def land_file(self) -> str:
        return os.path.join(self.state, "land.json")

    @property
    def push_file(self) -> str:
        return os.path.join(self.state, "push.json")


def context(
    cfg: config.Config, kind: str, issue: str, branch: str, state: str, rerun: str
) -> LandingContext:
    """The landing context of ``issue``; a live gate that is no checking gate is refused."""
    gates = config.effective_gates(cfg)
    by_name = {g.name: g for g in gates}
    live_gates = []
    for name in cfg["live_gates"]:
        if name not in by_name:
            raise PatchgateError(
                "PREFLIGHT",
                f"live_gates names {name!r}, which is not a configured gate "
                f"({', '.join(by_name) or 'none'}); fix live_gates in patchgate.yaml",
            )
        if by_name[name].fixes:
            raise PatchgateError(
                "PREFLIGHT",
                f"live gate {name} is a fixer (fixes: true) and would edit live; "
                "list only checking gates in live_gates",
            )
        live_gates.append(by_name[name])
    return LandingContext(
        kind=kind,
        root=cfg.root,
        issue=issue,
        live=cfg.live_repo,
        branch=branch,
        state=state,
        rerun=rerun,
        remote=cfg["remote"],
        require_push=bool(cfg["require_push"]),
        keep=bool(cfg["keep"]),
        message=config.variable("message"),
        commit_message=str(cfg["commit_message"]),
        operator=cfg["operator"],
        operator_confirmed=cfg.sources.get("operator") == "command line",
        co_authored_by=cfg["co_authored_by"],
        live_gates=tuple(live_gates),
        gates=tuple(gates),
        settings=settings_of(cfg),
        audit_command=tuple(cfg["audit_command"] or ()),
        gate_timeout=float(cfg["gate_timeout"]),
        git_timeout=float(cfg["git_timeout"]),
        audit_after_promote=bool(cfg["audit_after_promote"]),
    )


# --- the kinds of landing and the one chain they share -----------------------------------------


@dataclass(frozen=True)
class LandingKind:
    """One kind of landing (promote, finalize, rollback), as data plus its own actions.

    ``land`` (module-level, ``(ws_dir, ctx, log)``) copies the verified tree into live and
    commits it through ``land_changes``; ``finish`` records what landed and returns
    ``{"summary": …}``. Everything around them — the push, what every landing does after it
    lands, the audit command, resuming a landing whose commit was made — is ``chain``'s.
    Step names are formats of the issue id (``"{issue}-land"``).
    """

    name: str
    land: Callable[[str, LandingContext, str], None]
    finish: Callable[[str, LandingContext, str], dict[str, Any]]
    land_stage: str
    land_step: str = "{issue}-land"
    push_step: str = "{issue}-push"
    finish_step: str = "{issue}-finish"
    land_doc: str = "copy the verified files into live, live gates, commit (journaled)"
    finish_doc: str = "record the landing, clean up, audit command"
    # Failure hook of the land and push steps (and of finish, with fail_finish).
    on_failure: Callable[[str, str, str], None] | None = None
    fail_finish: bool = False
    # The file finish writes its summary into (the reporter reads it), if any.
    summary_file: Callable[[LandingContext], str] | None = None

    def task(self, step: str, issue: str) -> str:
        """The full doit name of one of this kind's steps."""
        return f"{self.name}:{step.format(issue=issue)}"


def chain(
    kind: LandingKind,
    ctx: LandingContext,
    ws: Workspace,
    *,
    group: str,
    log: str,
    resume: bool,
    land_deps: Sequence[str] = (),
    land_file_dep: Sequence[str] = (),
) -> Iterator[dict[str, Any]]:
    """The land, push and finish steps of a landing; push and finish only when ``resume`` (its
    commit landed in an earlier run that did not finish). ``land_deps`` are the steps (the
    verification) that must pass before anything lands. The setup task's notes (``ctx.notes``)
    are shown by the first of these steps that runs.
    """
    common: dict[str, Any] = {"root": ctx.root, "log": log, "uptodate": [False]}
    quiet = replace(ctx, notes=())
    push_deps: list[str] = []
    if not resume:
        yield redact.step(
            group,
            kind.land_step.format(issue=ctx.issue),
            kind.land,
            [ws.dir, ctx, log],
            **common,
            stage=kind.land_stage,
            doc=kind.land_doc,
            file_dep=list(land_file_dep),
            task_dep=list(land_deps),
            targets=[ctx.land_file],
            on_failure=kind.on_failure,
        )
        push_deps = [kind.task(kind.land_step, ctx.issue)]
    yield redact.step(
        group,
        kind.push_step.format(issue=ctx.issue),
        push_landed,
        [ws.dir, ctx if resume else quiet, log],
        **common,
        stage="PUSH",
        doc="push the commit to the remote",
        file_dep=[ctx.land_file],
        task_dep=push_deps,
        targets=[ctx.push_file],
        on_failure=kind.on_failure,
    )
    yield redact.step(
        group,
        kind.finish_step.format(issue=ctx.issue),
        finish_landing,
        [kind.finish, ws.dir, quiet, log],
        **common,
        stage="FINISH",
        doc=kind.finish_doc,
        task_dep=[kind.task(kind.push_step, ctx.issue)],
        on_failure=kind.on_failure if kind.fail_finish else None,
        summary=kind.summary_file(ctx) if kind.summary_file else None,
    )


def finish_landing(
    finish: Callable[[str, LandingContext, str], dict[str, Any]],
    ws_dir: str,
    ctx: LandingContext,
    log: str,
) -> dict[str, Any]:
    """Action of every landing's last step: the kind's own record, then the audit command.

    A step that every landing runs after it lands (a notification, a watch) goes here, once.
    """
    landed, pushed = read_json(ctx.land_file), read_json(ctx.push_file)  # finish may clean up
    result = finish(ws_dir, ctx, log)
    forge.after_finish(ctx, landed, pushed, log)  # issue 15: annotate; never fails the landing
    summary = result["summary"]
    commit, push_state = summary["COMMIT"], summary["PUSH"]
    post_audit.after_landing(  # audit_command, then (a promotion) doit audit's check: issue 11
        result.get("record"),  # where a failure is kept, so a rerun is no SUCCESS
        partial(run_audit, ctx, commit, push_state, log),
        ctx.kind == "promote" and ctx.audit_after_promote,
        (ctx.root, ctx.live, ctx.branch),
        commit,
        push_state,
        log,
        redact.redact,
    )
    return result


def begin(cfg: config.Config, issue: str, what: str) -> tuple[str, list[str]]:
    """Where every landing starts, in the action of its setup task (``_promote``, ``_finalize``,
    ``_rollback``; see ``prepare``): the promotion lock (held to the end of the run), recovery
    of an interrupted landing, live's branch. Returns (branch, notes)."""
    lock.acquire(cfg.root, issue, what)
    notes = recover(cfg.root)
    git.live_head(cfg.live_repo)
    return current_branch(cfg.live_repo, cfg["branch"]), notes


def refuse(ws_dir: str, stage: str, message: str) -> None:
    """Action of a landing its setup task refused: the refusal, through the failure hook."""
    raise PatchgateError(stage, message)


def placeholder(group: str, root: str, log: str, name: str, command: str) -> dict[str, Any]:
    """What a landing's creator declares when its setup task did not run (doit list, help)."""
    err = PatchgateError(
        "PREFLIGHT", f"not asked for on this command line; run it as: doit {command}"
    )
    return failed_creator(group, root, log, err, name)

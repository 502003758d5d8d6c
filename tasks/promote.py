"""doit promote issue=ID: land what was verified on live — commit, push, archive, record, audit.

The chain of one issue shares the reporter group ``issue_ID`` with its verify chain, so a
promotion ends with one summary block:

    verify:ID-…           doit re-verifies first if the patch, the config or the base changed
    promote:ID-preflight  the verdict, live's branch, nothing stale, the paths clean and real
    promote:ID-land       journaled copy of the verified files into live, live gates, commit
    promote:ID-push       push to the remote: PUSH: OK | FAIL | SKIPPED
    promote:ID            patched_success.zip, patch to successful/, provenance, cleanup, audit

Before any of that, while doit loads the tasks, a promotion takes the lock, recovers an
interrupted promotion, fetches the remote and fast-forwards live when it is only behind: the
verify chain is then planned against the HEAD the commit will land on (see ``task_promote``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from . import (
    archive,
    config,
    faults,
    git,
    jail,
    lock,
    proc,
    provenance,
    report,
    scope,
    seal,
    trailers,
    verify,
)
from .apply import jail_env
from .errors import PatchgateError
from .gates import expand, expects_junit, gate_env, junit_path, matching, verdict_of
from .journal import (
    JOURNAL,
    JOURNAL_SCHEMA,
    check_copied,
    check_parents,
    complete,
    journal_path,
    open_journal,
    put,
    recover,
    same_image,
    undo,
)
from .steps import failed_creator, now, read_json, step, write_json
from .workspace import Workspace


def task_promote() -> Iterator[dict[str, Any]]:
    """Land a verified workspace on live: commit, push, archive, record, audit.

    issue=ID        the workspace to land; re-verified first if the patch, config or base changed
    message="…"     commit subject (default: meta.json "message", else commit_message)
    operator=NAME keep=1 require_push=1 live_changed=… skip_up_to_date=1 fast_forward=0
    """
    # First function of this module on purpose: doit runs task creators in the order of their
    # line numbers, and this one must fetch and fast-forward live before task_verify plans the
    # verify chain against live's HEAD. If that ever changes, preflight refuses the stale result.
    yield from promote_tasks(os.getcwd(), requested("promote"))


STATE_DIR = os.path.join("patches", ".state")
TOKEN_VARIABLES = ("PATCHGATE_PUSH_TOKEN", "GITHUB_TOKEN")
SHA = re.compile(r"^[0-9a-f]{40}$")
USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
TRIGGER = "doit promote"
MIB = 1024 * 1024

# Secrets seen in this process (remote URLs' userinfo): redacted from everything logged.
_secrets: set[str] = set()


# --- which command is this --------------------------------------------------------------------


def requested(basename: str) -> bool:
    """Whether this doit command runs task ``basename`` (or one of its subtasks).

    doit tells a task creator nothing about the command line (get_var holds only name=value
    variables), but the task names are a local of ``doit.loader.load_tasks``, which is on the
    stack while the creators run. Commands that only list tasks never count (``allow_delayed``
    is False for them): ``doit list`` must not fetch or take the lock.
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "load_tasks" and frame.f_globals.get("__name__") == "doit.loader":
            names = frame.f_locals.get("args") or ()
            runs = bool(frame.f_locals.get("allow_delayed"))
            return runs and any(
                isinstance(n, str) and (n == basename or n.startswith(basename + ":"))
                for n in names
            )
        frame = frame.f_back  # type: ignore[assignment]
    return False


# --- paths ------------------------------------------------------------------------------------


def state_dir(root: str, issue: str) -> str:
    return os.path.join(root, STATE_DIR, "promote", issue)


def promoted_path(root: str, issue: str) -> str:
    return os.path.join(root, STATE_DIR, "promoted", f"{issue}.json")


# --- secrets never reach a log ----------------------------------------------------------------


def _remember_url_secrets(url: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    for part in (parsed.password, parsed.username if parsed.password is None else None):
        if part and len(part) >= 4:
            _secrets.update({part, urllib.parse.unquote(part)})


def known_secrets() -> list[str]:
    found = set(_secrets)
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            found.update({value, urllib.parse.quote(value, safe="")})
    return sorted(found, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with URL userinfo (user:token@) and every known token value replaced by ***."""
    text = USERINFO.sub(r"\g<scheme>***@", text)
    for secret in known_secrets():
        text = text.replace(secret, "***")
    return text


def plog(log: str, text: str) -> None:
    """Append to the run log, redacted: every line promote writes goes through here."""
    report.log(log, redact(text))


def say(log: str, text: str) -> None:
    """A line the user should see now (doit shows an action's stdout) and in the log."""
    print(redact(text), flush=True)
    plog(log, text)


# --- live: branch, remote, origin ahead -------------------------------------------------------


def current_branch(live: str, configured: str | None) -> str:
    done = git.run(live, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    if done.returncode != 0:
        raise PatchgateError(
            "PREFLIGHT",
            f"live ({live}) is on a detached HEAD; check out the branch to land on "
            f"(git -C {live} switch {configured or 'main'}) and retry",
        )
    name = done.output.strip()
    if configured and name != configured:
        raise PatchgateError(
            "PREFLIGHT",
            f"live is on branch {name}, but promotions land on {configured} (branch "
            f"in patchgate.yaml); switch live to it (git -C {live} switch {configured}) or "
            "change branch",
        )
    return name


def remote_url(live: str, remote: str | None) -> str | None:
    """The URL of ``remote`` in live, or None when there is no such remote (or none is set)."""
    if not remote:
        return None
    done = git.run(live, "remote", "get-url", remote, check=False)
    if done.returncode != 0:
        return None
    url = done.output.strip()
    _remember_url_secrets(url)
    return url


def remote_access(url: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """git options and environment to reach ``url``: an env token becomes a credential helper.

    The token travels in the helper's environment only, never on a command line or in a log.
    """
    token = next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), None)
    if token and url.startswith(("http://", "https://")) and not USERINFO.match(url):
        helper = (
            '!f() { test "$1" = get || exit 0; echo username=x-access-token; '
            'echo "password=$PATCHGATE_CREDENTIAL"; }; f'
        )
        options = ("-c", "credential.helper=", "-c", f"credential.helper={helper}")
        return options, git.git_env({"PATCHGATE_CREDENTIAL": token})
    return (), git.git_env()


def first_problem(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for prefix in ("fatal:", "error:", "!", "remote: error", "ERROR"):
        for line in lines:
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "no output"


def sync_live(cfg: config.Config, branch: str, log: str) -> list[str]:
    """Fetch the remote; fast-forward live when it is only behind; refuse when it diverged.

    Runs while doit loads the tasks (before the verify chain is planned), under the lock.
    Returns what it did, one line each.
    """
    live, remote = cfg.live_repo, cfg["remote"]
    if not remote:
        return ["remote: null: no fetch, no push"]
    url = remote_url(live, remote)
    if url is None:
        return [f"live has no remote named {remote}: no fetch, no push"]
    if cfg["skip_up_to_date"]:
        return [f"skip_up_to_date=1: {remote}/{branch} was not checked"]
    tracking = f"refs/remotes/{remote}/{branch}"
    options, env = remote_access(url)
    plog(log, f"promote: git fetch {remote} ({url}) {branch}")
    done = git.run(
        live,
        *options,
        "fetch",
        "--quiet",
        "--no-tags",
        remote,
        f"+refs/heads/{branch}:{tracking}",
        check=False,
        env=env,
        timeout=float(cfg["git_timeout"]),
    )
    plog(log, done.output)
    if done.returncode != 0:
        if "couldn't find remote ref" in done.output:
            return [f"{remote} has no branch {branch} yet: the push creates it"]
        raise PatchgateError(
            "PREFLIGHT",
            redact(
                f"cannot fetch {remote} ({url}): {first_problem(done.output)}; check the network "
                "and the remote, or pass skip_up_to_date=1 to land without checking it "
                "(remote: null disables fetch and push)"
            ),
        )
    theirs, ours = git.out(live, "rev-parse", tracking), git.out(live, "rev-parse", "HEAD")
    if theirs == ours or git.is_ancestor(live, theirs, ours):
        return []
    if not git.is_ancestor(live, ours, theirs):
        raise PatchgateError(
            "PREFLIGHT",
            f"live and {remote}/{branch} have diverged (live {ours[:12]}, "
            f"{remote} {theirs[:12]}); bring the remote's commits into live (git -C {live} "
            f"pull --rebase {remote} {branch}) and retry, or pass skip_up_to_date=1 to land "
            "anyway (the push will then fail)",
        )
    count = git.out(live, "rev-list", "--count", f"{ours}..{theirs}")
    if not cfg["fast_forward"]:
        raise PatchgateError(
            "PREFLIGHT",
            f"{remote}/{branch} is {count} commit(s) ahead of live; update live "
            f"(git -C {live} pull --ff-only {remote} {branch}), or pass fast_forward=1, or "
            "skip_up_to_date=1 to land without it",
        )
    merged = git.run(live, "merge", "--ff-only", "--quiet", theirs, check=False)
    plog(log, merged.output)
    if merged.returncode != 0:
        raise PatchgateError(
            "PREFLIGHT",
            f"live is {count} commit(s) behind {remote}/{branch} and cannot be "
            f"fast-forwarded: {first_problem(merged.output)}; commit or move your uncommitted "
            "changes in those files, then retry",
        )
    return [
        f"live fast-forwarded {count} commit(s) to {remote}/{branch} ({theirs[:12]}); "
        "the workspace is verified on it before anything lands"
    ]


# --- landing ------------------------------------------------------------------------------------


def hash_tree(root: str, live: str, head: str, paths: Sequence[str]) -> str:
    """The tree of HEAD with ``paths`` as they are in live's working tree (a private index)."""
    index = os.path.join(root, STATE_DIR, f"promote-{os.getpid()}.index")
    env = git.git_env({"GIT_INDEX_FILE": index})
    try:
        git.run(live, "read-tree", head, env=env, stage="PROMOTE")
        git.run(live, "update-index", "--add", "--remove", "--", *paths, env=env, stage="PROMOTE")
        return git.out(live, "write-tree", env=env, stage="PROMOTE")
    finally:
        for leftover in (index, index + ".lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)


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
    plog(log, f"{kind}: journal {JOURNAL}: {len(changes)} path(s) on {head[:12]}")
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
        done = git.run(
            live,
            "commit-tree",
            tree,
            "-p",
            head,
            "-F",
            "-",
            input_bytes=message.encode(),
            stage="PROMOTE",
        )
        commit = next((ln for ln in reversed(done.output.split()) if SHA.match(ln)), "")
        if not commit:
            raise PatchgateError("PROMOTE", f"git commit-tree gave no commit id: {done.output}")
        faults.point(f"{kind}-commit-made")
        git.run(
            live,
            "update-ref",
            "-m",
            f"patchgate {kind}: {label}",
            f"refs/heads/{branch}",
            commit,
            head,
            stage="PROMOTE",
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
            plog(log, f"{kind}: live restored ({count} path(s) back to their pre-image)")
        raise
    return commit


# --- live gates -------------------------------------------------------------------------------


def changed_entries(status: str) -> set[str]:
    return {e[3:] for e in status.split("\0") if len(e) > 3}


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
    fields = git.run(
        live, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all",
        "--ignored", "--", ":(top)", *excludes,
    ).output.split("\0")  # fmt: skip
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
    ws: Workspace, ctx: dict[str, Any], changes: list[dict[str, Any]], log: str
) -> dict[str, str]:
    """The live gates, on live with the promoted files in place, before the commit.

    Jailed like any gate (jail: none runs them unjailed, with its warning), and judging only:
    live's working tree is the jail's read-only workdir, its .git and patchgate's own state
    (patches/, audit/ when live is the project folder) hidden. A gate writes only to a private
    folder outside live (``{cache}``, ``{junit}``) and its /tmp. Should anything in live change
    all the same (jail: none), the gate fails: live gates check, they do not fix.
    """
    live, settings = ctx["live"], ctx["settings"]
    hidden = tuple(os.path.join(ctx["root"], name) for name in PATCHGATE_STATE)
    verdicts: dict[str, str] = {}
    before = live_files(live, hidden)
    with live_gate_scratch(live, ctx["issue"]) as scratch:
        for gate in ctx["live_gates"]:
            name = gate["name"]
            files = matching(gate, changes)
            if not files and not settings["all_gates"]:
                why = f"no promoted file matches {', '.join(gate['files'])}"
                plog(log, f"live gate {name}: skipped ({why})")
                verdicts[name] = "skipped"
                continue
            os.makedirs(scratch.path("cache", name), exist_ok=True)
            junit = junit_path(scratch, name) if expects_junit(gate) else None
            argv = expand(gate, files, scratch, settings)
            spec = jail.JailSpec(
                mode=settings["jail"],
                workdir=live,
                extra_writable=(scratch.path("cache"),),
                readonly=(settings["tool_env"], *settings["jail_binds"]),
                uid=settings["jail_uid"],
                max_processes=settings["max_processes"],
                max_memory_mb=settings["max_memory_mb"],
                workdir_readonly=True,
                hidden=hidden,
            )
            plog(log, f"live gate {name}: {' '.join(argv)}")
            done = jail.run(
                argv,
                spec,
                env=jail_env(settings, gate_env(gate, scratch, settings)),
                timeout=gate["timeout"],
                output_cap=int(settings["output_cap_mb"] * MIB),
            )
            plog(
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
            plog(log, f"live gate {name}: pass")
    write_json(os.path.join(ctx["state"], "live-gates.json"), verdicts)
    return verdicts


# --- push -------------------------------------------------------------------------------------


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
    plog(log, f"push: {commit[:12]} to {remote} ({url}) as {branch}")
    done = git.run(
        live,
        *options,
        "push",
        "--porcelain",
        remote,
        f"{commit}:refs/heads/{branch}",
        check=False,
        env=env,
        timeout=timeout,
    )
    plog(log, f"{done.output}[push: exit {done.returncode}]")
    if done.returncode == 0:
        return "OK", f"pushed {commit[:12]} to {remote}/{branch}"
    why = "timed out" if done.timed_out else first_problem(done.output)
    return "FAIL", redact(f"push to {remote} ({url}) failed: {why}")


def push_landed(ws_dir: str, ctx: dict[str, Any], log: str) -> None:
    """Action of the push step (promote and finalize): PUSH: OK | FAIL | SKIPPED."""
    announce(ctx, log)
    landed = read_json(os.path.join(ctx["state"], "land.json"))
    commit = landed["commit"]
    state, detail = push(
        ctx["live"], ctx["remote"], ctx["branch"], commit, float(ctx["git_timeout"]), log
    )
    write_json(
        os.path.join(ctx["state"], "push.json"), {"push": state, "detail": detail, "commit": commit}
    )
    say(log, f"push: {state} ({detail})")
    if state == "FAIL" and ctx["require_push"]:
        raise PatchgateError(
            "PUSH",
            f"{detail}; the commit {commit[:12]} stays in live — push it by hand "
            f"(git -C {ctx['live']} push {ctx['remote']} {commit[:12]}:refs/heads/"
            f"{ctx['branch']}), then run {ctx['rerun']} to finish",
        )


def push_note(ctx: dict[str, Any], pushed: dict[str, Any]) -> str | None:
    if pushed["push"] != "FAIL":
        return None
    return (
        f"{pushed['detail']}; the commit stays — push by hand: git -C {ctx['live']} push "
        f"{ctx['remote']} {pushed['commit'][:12]}:refs/heads/{ctx['branch']}"
    )


# --- the audit command ------------------------------------------------------------------------


def run_audit(ctx: dict[str, Any], commit: str, push_state: str, log: str) -> None:
    argv = list(ctx["audit_command"] or [])
    if not argv:
        return
    plog(log, f"audit: {' '.join(argv)} (in {ctx['live']}, unjailed)")
    done = proc.run(argv, cwd=ctx["live"], env=proc.clean_env(), timeout=float(ctx["gate_timeout"]))
    plog(log, f"{done.output}[audit: exit {done.returncode}, {done.duration:.2f}s]")
    if done.timed_out or done.returncode != 0:
        why = (
            f"timed out after {ctx['gate_timeout']}s"
            if done.timed_out
            else f"exit {done.returncode}: {first_problem(done.output)}"
        )
        raise PatchgateError(
            "AUDIT",
            f"the audit command failed ({why}); the commit {commit[:12]} stays "
            f"(push: {push_state}) — fix what the audit reports",
        )


# --- the steps of promote ---------------------------------------------------------------------


def announce(ctx: dict[str, Any], log: str) -> None:
    """What happened at load time (recovery, fast-forward); only the first step has notes."""
    for note in ctx["notes"]:
        say(log, f"{ctx['kind']}: {note}")


def check_clean(
    live: str, paths: Sequence[str], what: str, stage: str = "PROMOTE", retry: str = "retry"
) -> None:
    """No uncommitted change (staged, unstaged, untracked, ignored) in the paths to land."""
    out = git.run(
        live,
        "--no-optional-locks",
        "--literal-pathspecs",
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--ignored=matching",
        "--no-renames",
        "--",
        *paths,
    ).output
    dirty = sorted(changed_entries(out))
    if dirty:
        more = f" and {len(dirty) - 5} more" if len(dirty) > 5 else ""
        raise PatchgateError(
            stage,
            f"live has uncommitted changes in {', '.join(dirty[:5])}{more}, which {what} "
            "would overwrite; commit, move or discard them (patchgate touches none of your "
            f"work), then {retry}",
        )


def check_writable(live: str, changes: list[dict[str, Any]]) -> None:
    for change in changes:
        check_parents(live, change["path"], create=False)
        full = os.path.join(live, change["path"])
        if os.path.isdir(full) and not os.path.islink(full):
            raise PatchgateError(
                "PROMOTE", f"{change['path']} is a directory in live; move it away and retry"
            )


def preflight(ws_dir: str, ctx: dict[str, Any], log: str) -> None:
    """Action of promote:ID-preflight: only a passed, current verification goes on."""
    ws = Workspace.at(ws_dir)
    issue, live = ctx["issue"], ctx["live"]
    lock.acquire(ctx["root"], issue, TRIGGER)
    announce(ctx, log)
    result = seal.read_sealed(ws.root, ws.result, issue)  # issue 12: only what verify wrote
    if result["verification_status"] != "pass":
        raise PatchgateError(
            "PROMOTE",
            f"the verification of issue {issue} failed ({result.get('stage')}: "
            f"{result.get('reason')}); a failed verification is never promoted — fix the patch "
            "and verify again",
        )
    if not result["changes"] or not result["tree"]:
        raise PatchgateError(
            "PROMOTE",
            f"the verified patch of issue {issue} changes nothing; there is nothing to promote",
        )
    seal.check_result(ws, result)  # ... and the tree its step records lead to
    failing = sorted(g for g, r in result["gates"].items() if r.get("verdict") == "fail")
    if failing:
        say(log, f"promote: warning: verified with failing gates allowed: {', '.join(failing)}")
    current_branch(live, ctx["branch"])
    head = git.live_head(live)
    if result["base_sha"] != head:
        raise PatchgateError(
            "PROMOTE",
            f"the verification of issue {issue} is stale: it was verified on "
            f"{result['base_sha'][:12]}, live is at {head[:12]} (live moved after this run "
            f"planned it); run doit promote issue={issue} again: it re-verifies on the new base",
        )
    paths = [c["path"] for c in result["changes"]]
    protected = scope.check_protected_landing(ctx["root"], live, paths)  # issue 12
    check_clean(live, paths, f"promoting issue {issue}")
    check_writable(live, result["changes"])
    write_json(
        os.path.join(ctx["state"], "preflight.json"),
        {
            "issue": issue,
            "head": head,
            "tree": result["tree"],
            "changes": result["changes"],
            "files": sorted(paths),
            "patch_id": result["patch_id"],
            "patch": ws.read_meta()["patch"],
            "verification": result["verification_status"],
            "gates": {g: r.get("verdict", "") for g, r in result["gates"].items()},
            "protected": protected,
        },
    )
    plog(log, f"promote: preflight passed: {len(paths)} path(s) onto {head[:12]}")


def commit_message(ws: Workspace, ctx: dict[str, Any], pre: dict[str, Any]) -> str:
    issue = ctx["issue"]
    meta_message = ws.read_meta().get("message") if os.path.exists(ws.meta) else None
    subject = ctx["message"] or meta_message or str(ctx["commit_message"]).replace("{issue}", issue)
    pairs = [
        (trailers.PATCH_ID, pre["patch_id"]),
        (trailers.ISSUE, issue),
        (trailers.BASE, pre["head"]),
        (trailers.TRIGGER, TRIGGER),
        (trailers.VERIFICATION, trailers.verification_value(pre["verification"], pre["gates"])),
        (trailers.FILES, trailers.files_value(pre["files"])),
        (trailers.OPERATOR, ctx["operator"] or ""),
        (trailers.CO_AUTHORED_BY, ctx["co_authored_by"] or ""),
    ]
    body = f"Landed by patchgate: the tree {pre['tree'][:12]} verified in workspace issue_{issue}."
    return trailers.format_message(subject, body, pairs)


def land(ws_dir: str, ctx: dict[str, Any], log: str) -> None:
    """Action of promote:ID-land: copy, live gates, commit — all or nothing, journaled."""
    ws = Workspace.at(ws_dir)
    issue, live = ctx["issue"], ctx["live"]
    pre = read_json(os.path.join(ctx["state"], "preflight.json"))
    branch = current_branch(live, ctx["branch"])
    head = git.live_head(live)
    if head != pre["head"]:
        raise PatchgateError(
            "PROMOTE",
            f"live moved during the promotion ({pre['head'][:12]} -> {head[:12]}); "
            f"run doit promote issue={issue} again",
        )
    record = {
        "issue": issue,
        "patch_id": pre["patch_id"],
        "patch": pre["patch"],
        "files": pre["files"],
        "old_head": head,
        "tree": pre["tree"],
        "branch": branch,
    }
    hook = None
    if ctx["live_gates"]:

        def hook() -> None:
            run_live_gates(ws, ctx, pre["changes"], log)

    commit = land_changes(
        root=ctx["root"],
        live=live,
        branch=branch,
        head=head,
        changes=pre["changes"],
        tree=pre["tree"],
        message=commit_message(ws, ctx, pre),
        kind="promote",
        label=issue,
        record_path=os.path.join(ctx["state"], "land.json"),
        record=record,
        log=log,
        before_commit=hook,
    )
    say(log, f"promote: committed {commit} on {branch} (tree {pre['tree'][:12]}, as verified)")


def success_archive(live: str, commit: str, dest: str) -> None:
    """patched_success.zip: every file of the promotion commit (tracked files only)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    archive.commit_zip(live, commit, dest)


def copy_patch(root: str, patch: str | None, folder: str) -> str | None:
    """A copy of the patch file in patches/<folder>/ (a failed promotion keeps its patch)."""
    if not patch or not os.path.isfile(patch):
        return None
    dest_dir = os.path.join(root, "patches", folder)
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, os.path.basename(patch))
    shutil.copy2(patch, dest)
    return dest


def move_patch(root: str, state: str, commit: str, patch: str | None) -> str | None:
    """Move the patch to patches/successful/ (a timestamp is added if the name is taken), once.

    Where it goes is written first (``filed.json``, with the landed commit): a rerun after a
    kill moves it there or finds it there, and never picks a second name.
    """
    filed_path = os.path.join(state, "filed.json")
    filed = read_json(filed_path) if os.path.exists(filed_path) else {}
    if filed.get("commit") != commit:
        if not patch or not os.path.isfile(patch):
            return None
        dest_dir = os.path.join(root, "patches", "successful")
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, os.path.basename(patch))
        if os.path.exists(dest):
            stem, ext = os.path.splitext(os.path.basename(patch))
            dest = os.path.join(dest_dir, f"{stem}.{datetime.now(UTC):%Y%m%dT%H%M%SZ}{ext}")
        filed = {"commit": commit, "dest": dest}
        write_json(filed_path, filed)
    dest = filed["dest"]
    if patch and os.path.isfile(patch) and not os.path.exists(dest):
        os.replace(patch, dest)
    return dest if os.path.exists(dest) else None


def remove_workspace(live: str, ws: Workspace, log: str) -> None:
    if os.path.lexists(ws.repo):
        git.run(live, "worktree", "remove", "--force", ws.repo, check=False)
    git.run(live, "worktree", "prune", check=False)
    faults.point("promote-worktree-removed")
    shutil.rmtree(ws.dir, ignore_errors=True)
    plog(log, f"promote: workspace {os.path.relpath(ws.dir, ws.root)} removed")


def record_apply(
    root: str,
    ctx: dict[str, Any],
    landed: dict[str, Any],
    pushed: dict[str, Any],
    trigger: str,
    issue: str | None = None,
) -> None:
    """The provenance `apply` event of a landed commit (promote and finalize)."""
    event: dict[str, Any] = {
        "event": "apply",
        "patch_id": landed["patch_id"],
        "commit_hash": landed["commit"],
        "operator_confirmed": bool(ctx["operator_confirmed"]),
        "push": pushed["push"],
        "files": landed["files"],
        "trigger": trigger,
        "base_sha": landed["old_head"],
    }
    if issue is not None:
        event["issue"] = issue
    if ctx["operator"]:
        event["operator"] = ctx["operator"]
    provenance.append_event(root, event)


def landed_summary(
    ctx: dict[str, Any], landed: dict[str, Any], pushed: dict[str, Any]
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
        summary["NOTE"] = redact(note)
    return summary


def finish(ws_dir: str, ctx: dict[str, Any], log: str) -> None:
    """Action of promote:ID: archive, patch to successful/, provenance, cleanup, record, audit."""
    ws = Workspace.at(ws_dir)
    root, issue, live = ctx["root"], ctx["issue"], ctx["live"]
    landed = read_json(os.path.join(ctx["state"], "land.json"))
    pushed = read_json(os.path.join(ctx["state"], "push.json"))
    commit = landed["commit"]
    out_dir = os.path.join(root, "patches", "successful", issue)
    started = time.monotonic()
    success_archive(live, commit, os.path.join(out_dir, "patched_success.zip"))
    faults.point("promote-archived")
    archive_seconds = time.monotonic() - started
    if os.path.exists(ws.archive):
        shutil.copy2(ws.archive, os.path.join(out_dir, "patched.zip"))
    moved = move_patch(root, ctx["state"], commit, landed.get("patch"))
    faults.point("promote-filed")
    record_apply(root, ctx, landed, pushed, TRIGGER, issue)
    faults.point("promote-recorded")
    started = time.monotonic()
    if not ctx["keep"]:
        remove_workspace(live, ws, log)
    cleanup_seconds = time.monotonic() - started
    summary = landed_summary(ctx, landed, pushed)
    summary.update(scope.protected_summary(ctx["state"]))  # issue 12: PROTECTED: ...
    write_json(
        promoted_path(root, issue),
        {
            "issue": issue,
            "commit": commit,
            "push": pushed["push"],
            "files": landed["files"],
            "patch_id": landed["patch_id"],
            "promoted_at": now(),
            "summary": summary,
            "archive": os.path.relpath(os.path.join(out_dir, "patched_success.zip"), root),
            "patch": os.path.relpath(moved, root) if moved else None,
            "timings": {
                "archive_seconds": round(archive_seconds, 3),
                "cleanup_seconds": round(cleanup_seconds, 3),
            },
        },
    )
    plog(
        log,
        f"promote: done: {commit} (push {pushed['push']}); archive "
        f"{os.path.relpath(out_dir, root)}/patched_success.zip",
    )
    run_audit(ctx, commit, pushed["push"], log)


def promote_failed(ws_dir: str, stage: str, message: str) -> None:
    """Failure hook of every promote step: a promote_fail event, a copy in unsuccessful/."""
    ws = Workspace.at(ws_dir)
    try:
        result = read_json(ws.result) if os.path.exists(ws.result) else {}
        patch = ws.read_meta().get("patch") if os.path.exists(ws.meta) else None
        copy_patch(ws.root, patch, "unsuccessful")
        event: dict[str, Any] = {
            "event": "promote_fail",
            "patch_id": result.get("patch_id") or provenance.NO_PATCH,
            "issue": ws.issue,
            "stage": stage,
            "reason": redact(message) or "failed",
        }
        landed = os.path.join(state_dir(ws.root, ws.issue), "land.json")
        if os.path.exists(landed):
            event["commit_hash"] = read_json(landed)["commit"]
        provenance.append_event(ws.root, event)
    except (OSError, PatchgateError, ValueError) as exc:  # never hide the failure itself
        print(f"promote: could not record the failure: {exc}", file=sys.stderr)


def refuse(ws_dir: str, stage: str, message: str) -> None:
    raise PatchgateError(stage, message)


def redacting(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func``; its error messages leave redacted (a push error can quote a URL)."""
    try:
        return func(*args)
    except PatchgateError as err:
        raise PatchgateError(err.stage, redact(err.message)) from None


def pstep(
    group: str,
    name: str,
    func: Callable[..., Any],
    args: list[Any],
    *,
    on_failure: Callable[[str, str, str], None] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """steps.step whose action's messages are redacted before anything logs them."""
    task = step(group, name, func, args, on_failure=on_failure, **kw)
    action, (_, *rest) = task["actions"][0]
    task["actions"] = [(action, [partial(redacting, func), *rest])]
    return task


def report_promoted(ws_dir: str, record_path: str, log: str) -> dict[str, Any]:
    """Action for an issue promoted before: say so, change nothing."""
    record = read_json(record_path)
    line = f"issue {record['issue']} was already promoted in {record['commit']}"
    say(log, line)
    return {
        "summary": {
            "RESULT": "SUCCESS",
            "FILES": ", ".join(record["files"]),
            "COMMIT": record["commit"],
            "PUSH": record["push"],
            "NOTE": line,
        }
    }


# --- the task creator's work ------------------------------------------------------------------


def context(cfg: config.Config, issue: str, branch: str, state: str) -> dict[str, Any]:
    """Plain values the actions need (picklable for doit -P process)."""
    gates = {g["name"]: g for g in config.effective_gates(cfg)}
    live_gates = []
    for name in cfg["live_gates"]:
        if name not in gates:
            raise PatchgateError(
                "PREFLIGHT",
                f"live_gates names {name!r}, which is not a configured gate "
                f"({', '.join(gates) or 'none'}); fix live_gates in patchgate.yaml",
            )
        if gates[name]["fixes"]:
            raise PatchgateError(
                "PREFLIGHT",
                f"live gate {name} is a fixer (fixes: true) and would edit live; "
                "list only checking gates in live_gates",
            )
        live_gates.append(gates[name])
    return {
        "root": cfg.root,
        "issue": issue,
        "live": cfg.live_repo,
        "branch": branch,
        "remote": cfg["remote"],
        "require_push": bool(cfg["require_push"]),
        "keep": bool(cfg["keep"]),
        "message": config.variable("message"),
        "commit_message": cfg["commit_message"],
        "operator": cfg["operator"],
        "operator_confirmed": cfg.sources.get("operator") == "command line",
        "co_authored_by": cfg["co_authored_by"],
        "live_gates": live_gates,
        "settings": verify.settings_of(cfg),
        "audit_command": cfg["audit_command"],
        "gate_timeout": cfg["gate_timeout"],
        "git_timeout": cfg["git_timeout"],
        "state": state,
        "notes": [],
        "rerun": f"doit promote issue={issue}",
        "kind": "promote",
    }


def landed_record(path: str, live: str) -> dict[str, Any] | None:
    """A landing whose finish has not run yet, if its commit is still in live's history."""
    if not os.path.exists(path):
        return None
    record: dict[str, Any] = read_json(path)
    if git.is_ancestor(live, record["commit"], "HEAD"):
        return record
    os.unlink(path)  # the commit left live's history (reset by hand): land afresh
    return None


def placeholder(group: str, root: str, log: str, name: str, command: str) -> dict[str, Any]:
    err = PatchgateError("PREFLIGHT", f"run it as: doit {command}")
    return failed_creator(group, root, log, err, name)


def promote_tasks(root: str, wanted: bool) -> Iterator[dict[str, Any]]:
    log = report.log_path(root, "promote")
    if not wanted:  # doit list, or another command: describe, touch nothing
        yield placeholder("promote", root, log, "preflight", "promote issue=ID")
        return
    try:
        cfg = config.load(root)
        issue = config.variable("issue")
        if issue is None:
            raise PatchgateError(
                "PREFLIGHT",
                "promote needs issue=ID: the workspace patches/workspaces/issue_ID to land",
            )
        verify.check_issue(issue)
    except PatchgateError as err:
        yield failed_creator("promote", root, log, err)
        return
    group = f"issue_{issue}"
    log = report.log_path(root, group)
    ws = Workspace(root, issue)
    common: dict[str, Any] = {"root": root, "log": log, "uptodate": [False]}
    if os.path.exists(promoted_path(root, issue)):
        yield pstep(
            group,
            issue,
            report_promoted,
            [ws.dir, promoted_path(root, issue), log],
            **common,
            stage="PROMOTE",
            doc="already promoted: say so",
        )
        return
    try:
        lock.acquire(root, issue, TRIGGER)
    except PatchgateError as err:
        yield failed_creator(group, root, log, err, f"{issue}-preflight")
        return
    notes: list[str] = []
    planned: set[str] = set()
    try:
        notes += recover(root)
        live = cfg.live_repo
        git.live_head(live)
        branch = current_branch(live, cfg["branch"])
        ctx = context(cfg, issue, branch, state_dir(root, issue))
        landed = landed_record(os.path.join(ctx["state"], "land.json"), live)
        if landed is None:
            if not os.path.exists(ws.meta) and config.variable("patch") is None:
                raise PatchgateError(
                    "PREFLIGHT",
                    f"no workspace for issue {issue}; run doit "
                    f"verify patch=PATH issue={issue} first",
                )
            notes += sync_live(cfg, branch, log)
            warning = jail.preflight(cfg["jail"])
            planned = {
                t["name"] for t in verify.requested_chains(cfg, git.live_head(live), warning)
            }
            if not planned & {f"{issue}-archive", f"{issue}-preflight"}:
                raise PatchgateError(
                    "PREFLIGHT",
                    f"the verification of issue {issue} could "
                    f"not be planned; run doit verify issue={issue}",
                )
    except PatchgateError as err:
        for note in notes:
            say(log, f"promote: {note}")
        yield pstep(
            group,
            f"{issue}-preflight",
            refuse,
            [ws.dir, err.stage, redact(err.message)],
            **common,
            stage=err.stage,
            doc="refuse",
            on_failure=promote_failed if os.path.exists(ws.meta) else None,
        )
        return
    os.makedirs(ctx["state"], exist_ok=True)
    first = {**ctx, "notes": notes}
    land_file = os.path.join(ctx["state"], "land.json")
    push_file = os.path.join(ctx["state"], "push.json")
    hook = promote_failed
    push_deps: list[str] = []
    if landed is None:
        verified = f"{issue}-archive" if f"{issue}-archive" in planned else f"{issue}-preflight"
        pre_file = os.path.join(ctx["state"], "preflight.json")
        yield pstep(
            group,
            f"{issue}-preflight",
            preflight,
            [ws.dir, first, log],
            **common,
            stage="PROMOTE",
            doc="a passed, current verification; live ready for it",
            file_dep=[ws.result] if verified.endswith("-archive") else [],
            task_dep=[f"verify:{verified}"],
            targets=[pre_file],
            on_failure=hook,
        )
        yield pstep(
            group,
            f"{issue}-land",
            land,
            [ws.dir, ctx, log],
            **common,
            stage="PROMOTE",
            doc="copy the verified files into live, live gates, commit (journaled)",
            file_dep=[pre_file],
            task_dep=[f"promote:{issue}-preflight"],
            targets=[land_file],
            on_failure=hook,
        )
        push_deps = [f"promote:{issue}-land"]
    yield pstep(
        group,
        f"{issue}-push",
        push_landed,
        [ws.dir, ctx if push_deps else first, log],
        **common,
        stage="PUSH",
        doc="push the commit to the remote",
        file_dep=[land_file],
        task_dep=push_deps,
        targets=[push_file],
        on_failure=hook,
    )
    yield pstep(
        group,
        issue,
        finish,
        [ws.dir, ctx, log],
        **common,
        stage="FINISH",
        doc="archive, patch to successful/, provenance, cleanup, audit",
        file_dep=[land_file, push_file],
        task_dep=[f"promote:{issue}-push"],
        targets=[promoted_path(root, issue)],
        summary=promoted_path(root, issue),
    )

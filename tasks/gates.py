"""Gates: ruff, mypy, pytest and the repo's own build/test commands, chosen by what changed."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from typing import Any

from . import claims, config, faults, git, jail, proc, report, verdicts
from .config import Gate
from .errors import PatchgateError
from .liveguard import wait_live_capture
from .settings import Settings
from .steps import NotReadable, TooBig, read_json, read_untrusted, write_json
from .workspace import Workspace, ensure_tree, forget_tree, mark_tree

# Exit code 5 is pytest's "no tests were collected": never a pass.
PYTEST_NO_TESTS = 5
SCHEMA = "step-result.schema.json"
# path:line[:col]: message — ruff's concise format, mypy, flake8, gcc, most linters.
# A path has no spaces and is not a number (so "12:30:45 done" is no finding).
FINDING = re.compile(r"^(?P<path>(?!\d+:)[^\s:]+):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?P<msg>.+)$")
# ruff's default ("full") format puts the message first and the place on the next line.
RUFF_PLACE = re.compile(r"^\s*-->\s*(?P<path>[^:\s][^:]*):(?P<line>\d+):(?P<col>\d+)\s*$")
# pytest's short summary: "FAILED tests/test_x.py::test_y - AssertionError: ...".
PYTEST_SUMMARY = re.compile(r"^(?P<kind>FAILED|ERROR) (?P<test>\S+)(?: - (?P<msg>.*))?$")
# What bwrap says when the command does not exist inside the jail.
JAIL_NOT_FOUND = re.compile(r"^bwrap: execvp (?P<cmd>\S+): No such file or directory", re.M)
JAIL_NOT_EXECUTABLE = re.compile(r"^bwrap: execvp (?P<cmd>\S+): Permission denied", re.M)
MESSAGE_WIDTH = 160
# The most of a gate's JUnit XML patchgate reads (a bigger one fails the gate).
MAX_JUNIT_BYTES = 64 * 1024 * 1024


# --- selection and the command ---------------------------------------------------------------


def matching(gate: Gate, changes: list[dict[str, Any]]) -> list[str]:
    """Changed paths (not deleted) that match one of the gate's globs."""
    globs = gate.files
    return sorted(
        c["path"]
        for c in changes
        if c["status"] != "D"
        and any(
            fnmatch.fnmatch(c["path"], g) or fnmatch.fnmatch(os.path.basename(c["path"]), g)
            for g in globs
        )
    )


def cache_dir(ws: Workspace, name: str, base: bool = False) -> str:
    """The gate's own folder ({cache}, holding {junit}): the one folder of the workspace besides
    repo/ it may write. It never sees another gate's: a patch's tests (run by pytest) must not
    be able to forge mypy's cache, or the next attempt's type error passes.

    The base run (baseline=1) has its own, ``cache/.base/NAME``, which only base runs (base
    code, already on live) ever get writable: its result is stored in patches/.state/baseline/
    and excuses failures in every workspace on that base, so nothing a patch's code wrote, say
    into this gate's cache on an earlier attempt, may feed it. A gate name starts with a
    letter or digit: ``.base`` is no gate's folder.
    """
    return ws.path("cache", ".base", name) if base else ws.path("cache", name)


def junit_path(ws: Workspace, name: str, base: bool = False) -> str:
    return os.path.join(cache_dir(ws, name, base), "junit.xml")


def own_cache(ws: Workspace, name: str, base: bool = False) -> str:
    """The gate's folder, created; every level of it a real folder, never a symlink: bwrap
    binds what a symlink points to (before each gate got its own folder, any gate could
    write the whole of cache/, so an old workspace may hold one)."""
    path = cache_dir(ws, name, base)
    current = ws.dir
    for part in os.path.relpath(path, ws.dir).split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current) or not os.path.isdir(current):
            remove(current)
            os.mkdir(current)
    return path


def remove(path: str) -> None:
    """Remove whatever a gate left at ``path`` (a file, a symlink, a FIFO, a folder)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def uses_files(gate: Gate) -> bool:
    return "{files}" in gate.command


def expects_junit(gate: Gate) -> bool:
    """A gate with ``junit: true`` or a ``{junit}`` argument must leave a JUnit XML file."""
    return bool(gate.junit) or any("{junit}" in arg for arg in gate.command)


def looks_like_pytest(gate: Gate) -> bool:
    return any(os.path.basename(arg) in ("pytest", "py.test") for arg in gate.command)


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def placeholders(
    gate: Gate, ws: Workspace, settings: Settings, base: bool = False
) -> dict[str, str]:
    """{junit} and {cache} are in the gate's own folder (the base run's own, with ``base``)."""
    return {
        "{junit}": junit_path(ws, gate.name, base),
        "{cache}": cache_dir(ws, gate.name, base),
        "{python}": os.path.join(settings.tool_env, "bin", "python"),
    }


def file_arg(path: str) -> str:
    """A changed path as a gate's argument: never read as an option or an @argument file."""
    return f"./{path}" if path.startswith(("-", "@")) else path


def expand(
    gate: Gate,
    files: list[str],
    ws: Workspace,
    settings: Settings,
    base: bool = False,
) -> list[str]:
    """The gate's argv with {files}, {junit}, {cache}, {python} filled in; tools from tool_env.

    ``{files}`` is the changed files the gate applies to, or ``.`` when there are none (all_gates).
    The patch names them: one that starts with ``-`` or ``@`` is passed as ``./NAME``, so that no
    tool reads it as an option (``--config=…``) or an argument file (mypy's ``@args``).
    """
    values = placeholders(gate, ws, settings, base)
    argv: list[str] = []
    for arg in gate.command:
        if arg == "{files}":
            argv.extend(file_arg(f) for f in files or ["."])
        else:
            argv.append(_fill(arg, values))
    tool = os.path.join(settings.tool_env, "bin", argv[0])
    if "/" not in argv[0] and os.path.exists(tool):
        argv[0] = tool
    return argv


def gate_env(gate: Gate, ws: Workspace, settings: Settings, base: bool = False) -> dict[str, str]:
    """The gate's own ``env:``, placeholders filled (e.g. COVERAGE_FILE: "{cache}/.coverage")."""
    values = placeholders(gate, ws, settings, base)
    return {k: _fill(v, values) for k, v in gate.env.items()}


def workspace_env(
    gate: Gate, ws: Workspace, settings: Settings, base: bool = False
) -> dict[str, str]:
    """gate_env plus, for a gate that imports the project (imports_project), PYTHONPATH leading
    to the workspace (issue 11): after the gate's own entries, the links of plan_imports (when
    there are any), the workspace's ``src/`` when it has one, then its root. Python then
    imports the workspace's code ahead of any copy in tool_env's site-packages, and an
    editable install that points at live (which the jail hides) is not needed. The links are
    made by import_setup, which runs first."""
    env = gate_env(gate, ws, settings, base)
    if not imports_project(gate):
        return env
    links = imports_dir(ws, gate.name, base)
    extra = [links] if os.path.isdir(links) and os.listdir(links) else []
    env["PYTHONPATH"] = verdicts.python_path(ws.repo, env.get("PYTHONPATH"), extra)
    return env


def imports_dir(ws: Workspace, name: str, base: bool = False) -> str:
    """The gate's folder of import links (see verdicts.plan_imports), in its own cache folder."""
    return os.path.join(cache_dir(ws, name, base), ".imports")


def import_setup(ws: Workspace, gate: Gate, settings: Settings, base: bool = False) -> str | None:
    """Before a gate that runs Python: link what editable installs map onto other folders of
    the workspace; the reason the gate must fail when a copy of the project installed into
    tool_env from live would be imported instead of the workspace (else None)."""
    links = imports_dir(ws, gate.name, base)
    if not imports_project(gate):
        remove(links)
        return None
    live = ws.read_meta().live_repo
    installed = verdicts.installed_from(settings.tool_env, live)
    own = gate_env(gate, ws, settings, base).get("PYTHONPATH")
    plan = verdicts.plan_imports(ws.repo, installed, live, own)
    if plan.shadowing:
        return verdicts.shadow_reason(gate.name, ws.repo, plan.shadowing)
    if plan.mapped:
        own_cache(ws, gate.name, base)
        verdicts.link_imports(links, plan.mapped)
    else:
        remove(links)
    return None


# --- reading what a gate said ------------------------------------------------------------------


def _short(text: str) -> str:
    line = re.sub(r"\s*\n\s*", " ", text.strip())
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 1] + "…"


def _test_file(parts: list[str], repo: str | None) -> int:
    """How many leading parts of a dotted JUnit classname name a test file in ``repo``."""
    if repo is not None:
        for n in range(len(parts), 0, -1):
            if os.path.isfile(os.path.join(repo, *parts[:n]) + ".py"):
                return n
    # Without the tree to look at: classes are Capitalised, modules are not.
    n = len(parts)
    while n > 1 and parts[n - 1][:1].isupper():
        n -= 1
    return n


def node_id(classname: str, name: str, repo: str | None = None) -> str:
    """pytest's node id (tests/test_x.py::TestA::test_y) from JUnit's classname and name."""
    if not classname:  # a collection error: pytest names the module in ``name``
        parts = name.split(".")
        n = _test_file(parts, repo) if repo is not None else len(parts)
        return "/".join(parts[:n]) + ".py" if n == len(parts) and n else name
    parts = classname.split(".")
    n = _test_file(parts, repo)
    return "::".join(["/".join(parts[:n]) + ".py", *parts[n:], name])


def _failure_message(bad: ET.Element) -> str:
    """The first line of a failure's message; for pytest's generic "collection failure", the
    error it quotes (its last ``E   ...`` line: ``ModuleNotFoundError: No module named 'x'``)."""
    message = (bad.get("message") or "").strip()
    text = bad.text or ""
    if message in ("", "collection failure") or message.startswith("failed on setup"):
        quoted = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
        if quoted:
            return quoted[-1]
    lines = (message or text).strip().splitlines()
    return lines[0] if lines else ""


def read_junit(path: str, repo: str | None = None) -> dict[str, tuple[str, str]] | None:
    """{test id: (outcome, first line of the failure message)}; None if there is no file or it
    is not JUnit. The gate wrote it: NotReadable when it is no regular file, or too big."""
    data = read_untrusted(path, MAX_JUNIT_BYTES)
    return None if data is None else parse_junit(data, repo)


def parse_junit(data: bytes, repo: str | None = None) -> dict[str, tuple[str, str]] | None:
    """read_junit of the file's bytes."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    outcomes: dict[str, tuple[str, str]] = {}
    for case in root.iter("testcase"):
        tid = node_id(case.get("classname", ""), str(case.get("name", "")), repo)
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            outcomes[tid] = ("fail", _failure_message(bad))
        elif case.find("skipped") is not None:
            outcomes[tid] = ("skip", "")
        else:
            outcomes.setdefault(tid, ("pass", ""))
    return outcomes


def junit_failures(path: str, repo: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(failing test ids, {test id: pass|fail|skip}) from a JUnit XML file (see read_junit)."""
    tests = read_junit(path, repo) or {}
    outcomes = {t: o for t, (o, _) in tests.items()}
    return sorted(t for t, o in outcomes.items() if o == "fail"), outcomes


def parse_findings(output: str) -> list[tuple[str, str, str]]:
    """(path, line[:col], message) of every finding, in output order: ``path:line[:col]: msg`` lines
    and ruff's two-line "CODE message / --> path:line:col" blocks."""
    found: list[tuple[str, str, str]] = []
    header = ""
    for raw in output.splitlines():
        line = raw.strip()
        place = RUFF_PLACE.match(raw)
        if place and header:
            found.append((place["path"], f"{place['line']}:{place['col']}", header))
            header = ""
            continue
        m = FINDING.match(line)
        if m and not raw[:1].isspace():
            where = f"{m['line']}:{m['col']}" if m["col"] else m["line"]
            found.append((m["path"], where, m["msg"].strip()))
            header = ""
        elif line and not raw[:1].isspace() and not line.startswith(("|", "-->")):
            header = line
    return found


def first_error(output: str, returncode: int | None = None) -> str:
    """The line a user needs first: a failed test, an error finding, any finding, else the last
    line with the exit code."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in lines:
        m = PYTEST_SUMMARY.match(line)
        if m and ("::" in m["test"] or m["kind"] == "ERROR"):
            tail = f": {m['msg']}" if m["msg"] else ""
            return _short(f"{m['test']} {'failed' if m['kind'] == 'FAILED' else 'error'}{tail}")
    found = parse_findings(output)
    for path, line_no, msg in found:
        if "error" in msg.lower() or re.match(r"^[A-Z]+\d+\b", msg):
            return _short(f"{path}:{line_no}: {msg}")
    if found:
        path, line_no, msg = found[0]
        return _short(f"{path}:{line_no}: {msg}")
    exit_code = "" if returncode is None else f"exit {returncode}"
    for line in lines:
        if line.lower().startswith("error"):
            return _short(f"{exit_code}: {line}" if exit_code else line)
    if not lines:
        return f"{exit_code or 'failed'}, no output"
    return _short(f"{exit_code}: {lines[-1]}" if exit_code else lines[-1])


def findings(output: str) -> list[str]:
    """Findings without line numbers, so a baseline matches them after lines move; one entry per
    finding (a baseline compares counts: one more of a kind already there is a new finding)."""
    return sorted(f"{path}: {msg}" for path, _, msg in parse_findings(output))


def junit_refused(name: str, why: NotReadable) -> str:
    """The reason a gate fails whose JUnit file patchgate would not read."""
    if isinstance(why, TooBig):
        return f"{name}: the gate's JUnit file is {why}; it was not read; fix what the gate writes"
    return (
        f"{name}: the gate's JUnit file is not a regular file ({why}); it was not read; "
        "the gate must write {junit} as a plain file"
    )


def not_found(gate: Gate, done: proc.Completed) -> str | None:
    """The reason when the command could not start (missing or not executable), else None."""
    if done.returncode == 127 and done.duration == 0.0:
        return f"command {gate.command[0]!r} not found"
    missing = JAIL_NOT_FOUND.search(done.output)
    if missing and done.returncode != 0:
        return f"command {gate.command[0]!r} not found in the jail"
    denied = JAIL_NOT_EXECUTABLE.search(done.output)
    if (denied and done.returncode != 0) or (done.returncode == 126 and done.duration == 0.0):
        return f"command {gate.command[0]!r} is not executable"
    return None


def verdict_of(
    gate: Gate, done: proc.Completed, junit: str | None, repo: str | None = None
) -> tuple[str, str]:
    """(pass|fail, reason) from the exit code, the JUnit file and the output."""
    name = gate.name
    if done.timed_out:
        return "fail", (
            f"{name} timed out after {gate.timeout}s and was killed; "
            "fix the hang or raise the gate's timeout"
        )
    missing = not_found(gate, done)
    if missing:
        return "fail", (
            f"{name}: {missing}; install it in tool_env (or bind it with jail_binds) "
            "or fix the gate's command"
        )
    if done.returncode == PYTEST_NO_TESTS and (expects_junit(gate) or looks_like_pytest(gate)):
        return "fail", f"{name}: no tests were collected (exit 5); add tests or drop the gate"
    tests = None
    if junit is not None:
        try:
            data = read_untrusted(junit, MAX_JUNIT_BYTES)
        except NotReadable as why:
            return "fail", junit_refused(name, why)
        tests = None if data is None else parse_junit(data, repo)
        if tests is None and done.returncode == 0:
            what = "no JUnit XML" if data is None else "invalid JUnit XML"
            return "fail", f"{name} wrote {what} to {{junit}}; fix the gate's command"
    if tests is not None and not verdicts.tests_that_ran({t: o for t, (o, _) in tests.items()}):
        # Never a pass, whatever the exit code; an empty list says nothing, the output may.
        if not tests and done.returncode != 0:
            return "fail", f"{name}: no test ran; {first_error(done.output, done.returncode)}"
        return "fail", verdicts.no_test_ran(name, tests)
    if done.returncode == 0:
        return "pass", ""
    failing = sorted(t for t, (o, _) in (tests or {}).items() if o == "fail")
    if failing:
        message = tests[failing[0]][1] if tests else ""
        more = f" (+{len(failing) - 1} more)" if len(failing) > 1 else ""
        said = f": {_short(message)}" if message else ""
        return "fail", f"{name}: {failing[0]} failed{said}{more}"
    return "fail", f"{name}: {first_error(done.output, done.returncode)}"


# --- up to date --------------------------------------------------------------------------------


def gate_digest(gate: Gate, source: str, base: str, settings: Settings) -> str:
    """What a gate's verdict depends on: its config, the base, the content of its files.

    Not keep_going or allow_gates_fail: they decide what a verdict does, not what it is.
    """
    changes = read_json(source)["changes"] if os.path.exists(source) else []
    selected = set(matching(gate, changes))
    files = {c["path"]: c["blob"] for c in changes if c["path"] in selected}
    key = {
        "gate": gate.to_json(),
        "base": base,
        "files": files,
        "all_gates": settings.all_gates,
        "baseline": settings.baseline,
        "jail": settings.jail,
        "jail_binds": list(settings.jail_binds),
        "tool_env": settings.tool_env,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class GateInputs:
    """doit uptodate check evaluated when the gate is reached, after upstream steps have run.

    A fixing gate's record also carries the whole tree that later steps read. When its own
    files did not change but others did (a README edit), the gate is still up to date: its
    record is re-derived (input + the same fixes) instead of running the gate again.
    """

    def __init__(self, gate: Gate, source: str, meta: str, settings: Settings):
        self.gate, self.source, self.meta, self.settings = gate, source, meta, settings
        self.digest: str | None = None

    def configure_task(self, task: Any) -> None:
        task.value_savers.append(self.saved)

    def saved(self) -> dict[str, Any]:
        return {"gate_inputs": self.digest}

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        ws = Workspace.at(os.path.dirname(self.meta))
        base = ws.read_meta().base_sha if os.path.exists(self.meta) else ""
        self.digest = gate_digest(self.gate, self.source, base, self.settings)
        if values.get("gate_inputs") != self.digest:
            return False
        if self.gate.fixes:
            return refresh_fixer_record(ws, self.gate, self.source)
        return True


def refresh_fixer_record(ws: Workspace, gate: Gate, source: str) -> bool:
    """Bring an up-to-date fixer's record onto its current input; False if it must run."""
    target = ws.gate_file(gate.name)
    if not (os.path.exists(target) and os.path.exists(source)):
        return False
    record: dict[str, Any] = read_json(target)
    current: dict[str, Any] = read_json(source)
    if "input_tree" not in record:
        return False
    if record["input_tree"] == current["tree"]:
        return True
    fixed = {c["path"]: c for c in record["changes"] if c["path"] in record.get("fixed", [])}
    changes = {c["path"]: c for c in current["changes"]}
    changes.update(fixed)
    tree = current["tree"]
    if fixed:
        tree = overlay_tree(ws, current["tree"], list(fixed.values()))
        ensure_tree(ws, tree)
    record.update(
        input_tree=current["tree"],
        tree=tree,
        files=current["files"],
        changes=[changes[p] for p in sorted(changes)],
    )
    write_json(target, record, SCHEMA)
    return True


def overlay_tree(ws: Workspace, tree: str, entries: list[dict[str, str]]) -> str:
    """The tree id of ``tree`` with ``entries`` (path, mode, blob) written over it."""
    index = ws.path("overlay.index")
    rows = [(entry["mode"], entry["blob"], entry["path"]) for entry in entries]
    try:
        return git.tree_with_entries(ws.repo, index, tree, rows, stage="GATES")
    finally:
        if os.path.exists(index):
            os.unlink(index)


# --- running a gate ----------------------------------------------------------------------------


def run_gate(ws_dir: str, gate: Gate, source: str, settings: Settings, log: str) -> None:
    """Action of a gate step: select, run jailed, judge, record.

    A fixing gate's edits become the patch's own: its record is the next step's source.
    """
    ws = Workspace.at(ws_dir)
    current = read_json(source)
    files = matching(gate, current["changes"])
    # "files"/"tree"/"changes" keep apply.json's meaning: a fixer's record is the next source.
    record: dict[str, Any] = {
        "gate": gate.name,
        "checked": files,
        "files": current["files"],
        "tree": current["tree"],
        "changes": current["changes"],
        "input_tree": current["tree"],
        "fixed": [],
    }
    if not files and not settings.all_gates:
        why = f"no changed file matches {', '.join(gate.files)}"
        report.log(log, f"gate {gate.name}: skipped ({why})")
        write_json(ws.gate_file(gate.name), {**record, "verdict": "skipped", "reason": why}, SCHEMA)
        return
    ensure_tree(ws, current["tree"])
    wait_live_capture(ws.dir)  # the live guard's "before" is taken: the gate may run
    shadowed = import_setup(ws, gate, settings)
    if shadowed:  # issue 11: it would test an installed copy, not the workspace
        record.update(verdict="fail", reason=shadowed)
        finish(ws, gate, record, settings, log)
        return
    junit = junit_path(ws, gate.name) if expects_junit(gate) else None
    cache = own_cache(ws, gate.name)
    remove(junit_path(ws, gate.name))
    argv = expand(gate, files, ws, settings)
    report.log(log, f"gate {gate.name}: {' '.join(argv)}")
    # A build gate (issue 11) writes a throwaway copy bound at the worktree's path: it is
    # judged like any other gate, and what it writes never lands nor reaches a later gate.
    build = bool(gate.build)
    judge_only = not gate.fixes and (settings.jail == "bwrap" or build)
    if not judge_only:
        forget_tree(ws)
    scratch = build_copy(ws, gate.name) if build else None
    try:
        done = jail.run_jailed(
            settings,
            ws.repo,
            argv,
            timeout=gate.timeout,
            env=workspace_env(gate, ws, settings),
            writable=(cache,),
            workdir_readonly=judge_only and not build,
            workdir_source=scratch,
        )
    finally:
        if scratch is not None:
            remove(scratch)
    report.log(
        log, f"{done.output}[gate {gate.name}: exit {done.returncode}, {done.duration:.2f}s]"
    )
    faults.point(f"gate-ran:{gate.name}")
    if not judge_only:
        drop_ignored(ws, gate.name, log)
    verdict, reason = verdict_of(gate, done, junit, ws.repo)
    if gate.fixes and verdict == "pass":
        base_tree = ws.read_meta().base_tree
        tree = git.snapshot(ws.repo, ws.index)
        dropped = limit_fixes(ws, current["changes"], base_tree, tree, gate.name, log)
        record["tree"] = git.snapshot(ws.repo, ws.index) if dropped else tree
        mark_tree(ws, record["tree"])
        diff = git.diff_trees(ws.repo, base_tree, record["tree"])
        record["changes"] = [c.as_dict() for c in diff]
        before = {c["path"]: c["blob"] for c in current["changes"]}
        fixed = sorted(c["path"] for c in record["changes"] if before.get(c["path"]) != c["blob"])
        if fixed:
            report.log(log, f"gate {gate.name}: fixed {', '.join(fixed)}")
        record["fixed"] = fixed
        if dropped:
            record["fix_dropped"] = dropped
    record.update(
        {
            "verdict": verdict,
            "reason": reason,
            "exit_code": done.returncode,
            "duration_seconds": round(done.duration, 3),
            "command": argv,
            "timed_out": done.timed_out,
            "output_truncated": done.truncated,
        }
    )
    if settings.baseline and (verdict == "fail" or (junit and os.path.lexists(junit))):
        record.update(judge_against_base(ws, gate, files, settings, done, junit, log))
    finish(ws, gate, record, settings, log)


def finish(ws: Workspace, gate: Gate, record: dict[str, Any], settings: Settings, log: str) -> None:
    """Write the gate's record and log its verdict; a failure stops the chain unless told not."""
    verdict, reason = record["verdict"], record["reason"]
    write_json(ws.gate_file(gate.name), record, SCHEMA)
    report.log(log, f"gate {gate.name}: {verdict}" + (f" ({reason})" if reason else ""))
    if verdict == "fail" and not (settings.keep_going or settings.allow_gates_fail):
        drop_later_records(ws, gate.name)
        raise PatchgateError("GATES", reason)


def build_copy(ws: Workspace, name: str) -> str:
    """A throwaway copy of the worktree (without its .git) for build gate ``name`` to write."""
    path = ws.path("scratch", name)
    remove(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copytree(
        ws.repo, path, symlinks=True, ignore=lambda d, _: [".git"] if d == ws.repo else []
    )
    return path


def imports_project(gate: Gate) -> bool:
    """The gate runs the project's code: pytest, ``{python} ...``, ``python ...``, a JUnit gate,
    a build gate, Atlas's build and test commands. Those get the workspace on PYTHONPATH (issue
    11); a linter or type checker does not (it reads files; importing the project's packages
    could replace the tool's own dependencies when the project is one of them)."""
    first = os.path.basename(gate.command[0])
    return (
        looks_like_pytest(gate)
        or first == "{python}"
        or first.startswith("python")
        or expects_junit(gate)
        or bool(gate.build or gate.atlas)
    )


def limit_fixes(
    ws: Workspace,
    inputs: list[dict[str, Any]],
    base_tree: str,
    tree: str,
    name: str,
    log: str,
) -> dict[str, int]:
    """Undo what a fixer changed on lines the patch did not touch (issue 11): in each file it
    rewrote, keep only its hunks that overlap the patch's lines (verdicts.limit_fix).

    ``inputs``: the changes the fixer was given (against the base); ``tree``: the worktree as
    the fixer left it. A file the patch did not change at all goes back to the base; one that is
    no UTF-8 text, or no regular file, goes back to what the fixer was given. Returns
    {path: hunks undone}; the worktree holds the result.
    """
    given = {c["path"]: c for c in inputs}
    dropped: dict[str, int] = {}
    for change in git.diff_trees(ws.repo, base_tree, tree):
        was = given.get(change.path)
        if was is not None and was["blob"] == change.blob:
            continue  # the fixer left it as the patch made it
        if change.status in ("A", "D") and was is None:
            continue  # a file only the fixer made or deleted: scope judges it
        if change.mode not in ("100644", "100755"):
            continue  # a link or a submodule is no formatter's edit
        target = os.path.join(ws.repo, change.path)
        if was is not None and was["status"] == "D":
            os.unlink(target)  # the patch deleted it: the fixer may not bring it back
            dropped[change.path] = 1
            continue
        if was is None:
            # The patch did not change it: the fixer may not change it either.
            given_bytes = git.blob_bytes(ws.repo, f"{base_tree}:{change.path}")
            undone = 1
        else:
            given_bytes = git.blob_bytes(ws.repo, was["blob"])
            with open(target, "rb") as fh:
                fixed_bytes = fh.read()
            try:
                limited = verdicts.limit_fix(
                    base_text(ws.repo, base_tree, change.path),
                    given_bytes.decode("utf-8"),
                    fixed_bytes.decode("utf-8"),
                )
            except UnicodeDecodeError:
                undone = 1  # no text: the fix is undone whole
            else:
                if not limited.dropped:
                    continue
                given_bytes, undone = limited.text.encode("utf-8"), limited.dropped
        with open(target, "wb") as fh:
            fh.write(given_bytes)
        dropped[change.path] = undone
    if dropped:
        report.log(
            log,
            f"gate {name}: undid its edits on lines the patch did not change: "
            + ", ".join(f"{p} ({n} hunk(s))" for p, n in sorted(dropped.items())),
        )
    return dropped


def drop_ignored(ws: Workspace, name: str, log: str) -> None:
    """After a gate that could write the worktree (a fixer; any gate with jail: none): delete
    what it wrote where git ignores it, as the apply step does for the patch. It is no part of
    the tree that lands, yet a later gate would see it: bytecode the patch's code planted
    while a fixer imported it would be what pytest then judges."""
    removed = git.remove_ignored(ws.repo)
    if removed:
        report.log(
            log,
            f"gate {name}: removed {len(removed)} path(s) written where git ignores them (not "
            f"part of the patch, so later gates do not see them): {', '.join(removed)}",
        )


def drop_later_records(ws: Workspace, name: str) -> None:
    """The gates after a stopping failure do not run: their records from an earlier attempt
    must not speak for this one (and a missing target makes doit run them next time)."""
    try:
        cfg = config.load(ws.root, {})
        names = [g.name for g in claims.gates_of(cfg, ws.read_meta().patch)]
    except (PatchgateError, OSError, ValueError, KeyError):
        return
    for later in names[names.index(name) + 1 :] if name in names else []:
        path = ws.gate_file(later)
        if os.path.exists(path):
            os.unlink(path)


# --- baseline: judge only what the patch changed -----------------------------------------------

BASELINE_DIR = os.path.join("patches", ".state", "baseline")
BASELINE_VERSION = 2


def cache_path(ws: Workspace, gate: Gate, files: list[str], base_tree: str) -> str:
    """One cached base run per base tree, gate and (for {files} gates) the files it checks."""
    key = json.dumps(
        {
            "tree": base_tree,
            "gate": gate.to_json(),
            "files": files if uses_files(gate) else None,
            "v": BASELINE_VERSION,  # 2: findings with their counts (1 kept one of each kind)
        },
        sort_keys=True,
    )
    return os.path.join(ws.root, BASELINE_DIR, hashlib.sha256(key.encode()).hexdigest() + ".json")


def classify(base: dict[str, str], patch: dict[str, str]) -> dict[str, list[str]]:
    """Per test: fail->pass, pass->pass, pass->fail, fail->fail (a new test counts from pass)."""
    out: dict[str, list[str]] = {
        "fail->pass": [],
        "pass->pass": [],
        "pass->fail": [],
        "fail->fail": [],
    }
    for test, outcome in sorted(patch.items()):
        if outcome == "skip":
            continue
        before = "fail" if base.get(test) == "fail" else "pass"
        out[f"{before}->{outcome}"].append(test)
    return out


def run_on_base(
    ws: Workspace, gate: Gate, files: list[str], settings: Settings, log: str
) -> dict[str, Any]:
    """Run the gate once on the base commit (cached by base tree, gate config and files)."""
    meta = ws.read_meta()
    cached = cache_path(ws, gate, files, meta.base_tree)
    if os.path.exists(cached):
        report.log(log, f"baseline {gate.name}: cached ({os.path.relpath(cached, ws.root)})")
        result: dict[str, Any] = read_json(cached)
        return result
    current = git.snapshot(ws.repo, ws.index)
    forget_tree(ws)
    git.restore(ws.repo, meta.base_sha)
    try:
        on_base = [f for f in files if os.path.lexists(os.path.join(ws.repo, f))]
        if uses_files(gate) and files and not on_base:
            # Every file the gate checks is new: nothing of it could fail on the base.
            result = {"exit_code": 0, "findings": [], "tests": {}}
        else:
            # Its own folder, not the patch run's: see cache_dir.
            cache = own_cache(ws, gate.name, base=True)
            import_setup(ws, gate, settings, base=True)  # links of editable installs
            junit = junit_path(ws, gate.name, base=True)
            remove(junit)
            report.log(log, f"baseline {gate.name}: running on base {meta.base_sha[:12]}")
            done = jail.run_jailed(
                settings,
                ws.repo,
                expand(gate, on_base, ws, settings, base=True),
                timeout=gate.timeout,
                env=workspace_env(gate, ws, settings, base=True),
                writable=(cache,),
            )
            report.log(log, f"{done.output}[baseline {gate.name}: exit {done.returncode}]")
            try:
                tests = junit_failures(junit, ws.repo)[1]
            except NotReadable as why:
                report.log(log, f"baseline {junit_refused(gate.name, why)}")
                tests = {}
            result = {
                "exit_code": done.returncode,
                "findings": findings(done.output),
                "tests": tests,
                "timed_out": done.timed_out,
            }
    finally:
        git.restore(ws.repo, meta.base_sha, current)
        mark_tree(ws, current)
    if not result.get("timed_out"):
        write_json(cached, result)
    return result


def judge_against_base(
    ws: Workspace,
    gate: Gate,
    files: list[str],
    settings: Settings,
    done: proc.Completed,
    junit: str | None,
    log: str,
) -> dict[str, Any]:
    """The gate's verdict once what already failed on the base is taken out.

    What the base excuses is verdict ``excused``, never ``pass``. A JUnit run in which no test
    ran is not judged against anything: it fails (verdict_of). Findings are compared as counts
    per (file, message); tests one by one, a collection error being a failure of its file.
    """
    name = gate.name
    if done.timed_out or not_found(gate, done):
        return {}  # nothing the base could excuse
    try:
        patch_junit = read_junit(junit, ws.repo) if junit else None
    except NotReadable:
        return {}  # the gate failed for that, and no base run can excuse it
    patch_outcomes = {t: o for t, (o, _) in (patch_junit or {}).items()}
    if patch_junit is not None and not verdicts.tests_that_ran(patch_outcomes):
        return {}  # no test ran: verdict_of's failure stands, on the base or not
    base = run_on_base(ws, gate, files, settings, log)
    if patch_outcomes:
        return _judge_tests(name, done, patch_junit or {}, base)
    if done.returncode == 0:
        return {}
    patch_findings = [verdicts.Finding(*f) for f in parse_findings(done.output)]
    new = verdicts.new_findings(patch_findings, base["findings"], _changed_lines(ws, files))
    if new:
        first = verdicts.describe_new(*new[0])
        more = f" (+{len(new) - 1} more)" if len(new) > 1 else ""
        return {
            "verdict": "fail",
            "reason": _short(f"{name}: {first}") + more,
            "baseline": {"new_findings": [verdicts.describe_new(*n) for n in new]},
        }
    if base["exit_code"] != 0 and patch_findings:
        pre = len(base["findings"])
        return {
            "verdict": verdicts.EXCUSED,
            "reason": _short(
                f"{name}: failure pre-existing on the base ({pre} finding(s)), none added by "
                f"the patch (first: {patch_findings[0]})"
            ),
            "baseline": {"findings": base["findings"]},
        }
    return {}


def _judge_tests(
    name: str, done: proc.Completed, patch: dict[str, tuple[str, str]], base: dict[str, Any]
) -> dict[str, Any]:
    base_tests: dict[str, str] = base["tests"]
    base_ran = bool(verdicts.tests_that_ran(base_tests))
    # A base run in which no test ran excuses nothing: every failure counts as new.
    tests = classify(base_tests if base_ran else {}, {t: o for t, (o, _) in patch.items()})
    record: dict[str, Any] = {"tests": tests}
    if not base_ran:
        record["base_ran_no_test"] = True
    if tests["pass->fail"]:
        first = tests["pass->fail"][0]
        said = f": {_short(patch[first][1])}" if patch[first][1] else ""
        where = "passed on the base" if base_ran else "no test ran on the base"
        more = len(tests["pass->fail"]) - 1
        reason = f"{name}: {first} failed{said} ({where})" + (f" (+{more} more)" if more else "")
        return {"verdict": "fail", "reason": reason, "baseline": record}
    if done.returncode == 0 or not tests["fail->fail"]:
        return {"baseline": record}  # verdict_of's verdict stands (a failure JUnit cannot name)
    kept = tests["fail->fail"]
    said = f": {_short(patch[kept[0]][1])}" if patch[kept[0]][1] else ""
    return {
        "verdict": verdicts.EXCUSED,
        "reason": f"{name}: {len(kept)} test(s) already failing on the base "
        f"({kept[0]} failed{said})",
        "baseline": record,
    }


def _changed_lines(ws: Workspace, files: list[str]) -> dict[str, set[int]]:
    """path -> lines the patch changed, for the files a gate checked (text files only)."""
    base_tree = ws.read_meta().base_tree
    out: dict[str, set[int]] = {}
    for path in files:
        try:
            with open(os.path.join(ws.repo, path), encoding="utf-8") as fh:
                now = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        out[path] = verdicts.changed_lines(base_text(ws.repo, base_tree, path), now)
    return out


def base_text(repo: str, base_tree: str, path: str) -> str | None:
    """The text of ``path`` on the base; None when the base has no such file (or no text)."""
    try:
        return git.blob_bytes(repo, f"{base_tree}:{path}").decode("utf-8")
    except (PatchgateError, UnicodeDecodeError):
        return None

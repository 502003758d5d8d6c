"""Gates: ruff, mypy, pytest and the repo's own build/test commands, chosen by what changed."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from typing import Any

from tasks import git, report
from tasks.apply import run_jailed
from tasks.errors import PatchgateError
from tasks.steps import read_json, write_json
from tasks.workspace import Workspace, ensure_tree

# Exit code 5 is pytest's "no tests were collected": never a pass.
PYTEST_NO_TESTS = 5
SCHEMA = "step-result.schema.json"
FINDING = re.compile(r"^(?P<path>[^\s:][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)?\s*(?P<msg>.+)$")


def matching(gate: dict[str, Any], changes: list[dict[str, Any]]) -> list[str]:
    """Changed paths (not deleted) that match one of the gate's globs."""
    globs = gate["files"]
    return sorted(
        c["path"]
        for c in changes
        if c["status"] != "D"
        and any(fnmatch.fnmatch(c["path"], g) or fnmatch.fnmatch(os.path.basename(c["path"]), g)
                for g in globs)
    )


def junit_path(ws: Workspace, name: str) -> str:
    return ws.path("cache", name, "junit.xml")


def expand(gate: dict[str, Any], files: list[str], ws: Workspace, settings: dict[str, Any]) -> list[str]:
    """The gate's argv with {files}, {junit}, {cache}, {python} filled in; tools from tool_env."""
    cache = ws.path("cache", gate["name"])
    values = {"{junit}": junit_path(ws, gate["name"]), "{cache}": cache,
              "{python}": os.path.join(settings["tool_env"], "bin", "python")}
    argv: list[str] = []
    for arg in gate["command"]:
        if arg == "{files}":
            argv.extend(files or ["."])
            continue
        for key, value in values.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    tool = os.path.join(settings["tool_env"], "bin", argv[0])
    if "/" not in argv[0] and os.path.exists(tool):
        argv[0] = tool
    return argv


def junit_failures(path: str) -> tuple[list[str], dict[str, str]]:
    """(failing test ids, {test id: outcome}) from a JUnit XML file."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        test_id = f"{classname.replace('.', '/')}.py::{case.get('name')}" if classname else str(
            case.get("name"))
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        outcomes[test_id] = "fail" if bad else "skip" if skipped else "pass"
    return sorted(t for t, o in outcomes.items() if o == "fail"), outcomes


def first_error(output: str) -> str:
    """The first line that reads like a finding (path:line: message), else the last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in lines:
        if FINDING.match(line) and ("error" in line or re.search(r":\d+:\d+: [A-Z]+\d+", line)):
            return line
    for line in lines:
        if FINDING.match(line):
            return line
    return lines[-1] if lines else "no output"


def findings(output: str) -> list[str]:
    """Findings without line numbers, so a baseline matches them after lines move."""
    out = []
    for line in output.splitlines():
        m = FINDING.match(line.strip())
        if m:
            out.append(f"{m['path']}: {m['msg']}")
    return sorted(set(out))


def gate_digest(gate: dict[str, Any], source: str, base: str, settings: dict[str, Any]) -> str:
    """What a gate's verdict depends on: its config, the base, the content of its files."""
    changes = read_json(source)["changes"] if os.path.exists(source) else []
    files = {c["path"]: c["blob"] for c in changes if c["path"] in matching(gate, changes)}
    key = {"gate": gate, "base": base, "files": files, "all_gates": settings["all_gates"],
           "keep_going": settings["keep_going"], "baseline": settings["baseline"],
           "jail": settings["jail"], "tool_env": settings["tool_env"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class GateInputs:
    """doit uptodate check evaluated when the gate is reached, after upstream steps have run."""

    def __init__(self, gate: dict[str, Any], source: str, meta: str, settings: dict[str, Any]):
        self.gate, self.source, self.meta, self.settings = gate, source, meta, settings
        self.digest: str | None = None

    def configure_task(self, task: Any) -> None:
        task.value_savers.append(lambda: {"gate_inputs": self.digest})

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        base = read_json(self.meta)["base_sha"] if os.path.exists(self.meta) else ""
        self.digest = gate_digest(self.gate, self.source, base, self.settings)
        return bool(values.get("gate_inputs") == self.digest)


def verdict_of(gate: dict[str, Any], done: Any, junit: str | None) -> tuple[str, str]:
    name = gate["name"]
    if done.timed_out:
        return "fail", f"{name} timed out after {gate['timeout']}s and was killed"
    if done.returncode == 127:
        return "fail", f"{name}: command {gate['command'][0]!r} not found; install it or fix the gate"
    if gate["junit"] and done.returncode == PYTEST_NO_TESTS:
        return "fail", f"{name}: no tests were collected (exit 5); add tests or drop the gate"
    if junit is not None and not os.path.exists(junit):
        if done.returncode == 0:
            return "fail", f"{name} wrote no JUnit XML to {{junit}}; fix the gate's command"
        junit = None
    if done.returncode == 0:
        return "pass", ""
    if junit is not None:
        failing, _ = junit_failures(junit)
        if failing:
            return "fail", f"{name}: {failing[0]} failed" + (
                f" (+{len(failing) - 1} more)" if len(failing) > 1 else "")
    return "fail", f"{name}: {first_error(done.output)}"


def run_gate(ws_dir: str, gate: dict[str, Any], source: str, settings: dict[str, Any], log: str) -> None:
    """Action of a gate step: select, run jailed, judge, record; a fixer's edits become the patch's."""
    ws = Workspace.at(ws_dir)
    current = read_json(source)
    files = matching(gate, current["changes"])
    # "files"/"tree"/"changes" keep apply.json's meaning: a fixer's record is the next source.
    record: dict[str, Any] = {"gate": gate["name"], "checked": files, "files": current["files"],
                              "tree": current["tree"], "changes": current["changes"]}
    if not files and not settings["all_gates"]:
        why = f"no changed file matches {', '.join(gate['files'])}"
        report.log(log, f"gate {gate['name']}: skipped ({why})")
        write_json(ws.gate_file(gate["name"]), {**record, "verdict": "skipped", "reason": why},
                   SCHEMA)
        return
    ensure_tree(ws, current["tree"])
    junit = junit_path(ws, gate["name"]) if gate["junit"] else None
    os.makedirs(ws.path("cache", gate["name"]), exist_ok=True)
    if junit and os.path.exists(junit):
        os.unlink(junit)
    argv = expand(gate, files, ws, settings)
    report.log(log, f"gate {gate['name']}: {' '.join(argv)}")
    done = run_jailed({**settings, "writable": (ws.path("cache"),)}, ws, argv,
                      timeout=gate["timeout"], env=gate["env"])
    report.log(log, f"{done.output}[gate {gate['name']}: exit {done.returncode}, "
                    f"{done.duration:.2f}s]")
    verdict, reason = verdict_of(gate, done, junit)
    if gate["fixes"] and verdict == "pass":
        record["tree"] = git.snapshot(ws.repo, ws.index)
        base_tree = read_json(ws.meta)["base_tree"]
        record["changes"] = [c.as_dict() for c in git.diff_trees(ws.repo, base_tree, record["tree"])]
        before = {c["path"]: c["blob"] for c in current["changes"]}
        fixed = sorted(c["path"] for c in record["changes"] if before.get(c["path"]) != c["blob"])
        if fixed:
            report.log(log, f"gate {gate['name']}: fixed {', '.join(fixed)}")
        record["fixed"] = fixed
    record.update({"verdict": verdict, "reason": reason, "exit_code": done.returncode,
                   "duration_seconds": round(done.duration, 3), "command": argv})
    if settings["baseline"] and verdict == "fail":
        record.update(judge_against_base(ws, gate, files, settings, done, junit, log))
        verdict, reason = record["verdict"], record["reason"]
    write_json(ws.gate_file(gate["name"]), record, SCHEMA)
    if verdict == "fail" and not (settings["keep_going"] or settings["allow_gates_fail"]):
        raise PatchgateError("GATES", reason)


# Baseline: judge only what the patch changed.

BASELINE_DIR = os.path.join("patches", ".state", "baseline")


def cache_path(ws: Workspace, gate: dict[str, Any], files: list[str], base_tree: str) -> str:
    key = json.dumps({"tree": base_tree, "gate": gate, "files": files}, sort_keys=True)
    return os.path.join(ws.root, BASELINE_DIR, hashlib.sha256(key.encode()).hexdigest() + ".json")


def classify(base: dict[str, str], patch: dict[str, str]) -> dict[str, list[str]]:
    """Per test: fail->pass, pass->pass, pass->fail, fail->fail (a new test counts from pass)."""
    out: dict[str, list[str]] = {"fail->pass": [], "pass->pass": [], "pass->fail": [],
                                 "fail->fail": []}
    for test, outcome in sorted(patch.items()):
        if outcome == "skip":
            continue
        before = "fail" if base.get(test) == "fail" else "pass"
        out[f"{before}->{outcome}"].append(test)
    return out


def run_on_base(ws: Workspace, gate: dict[str, Any], files: list[str], settings: dict[str, Any],
                log: str) -> dict[str, Any]:
    """Run the gate once on the base commit (cached by base tree, gate config and files)."""
    meta = read_json(ws.meta)
    cached = cache_path(ws, gate, files, meta["base_tree"])
    if os.path.exists(cached):
        result: dict[str, Any] = read_json(cached)
        return result
    current = git.snapshot(ws.repo, ws.index)
    git.restore(ws.repo, meta["base_sha"])
    try:
        on_base = [f for f in files if os.path.lexists(os.path.join(ws.repo, f))]
        junit = junit_path(ws, gate["name"])
        if os.path.exists(junit):
            os.unlink(junit)
        report.log(log, f"baseline {gate['name']}: running on base {meta['base_sha'][:12]}")
        done = run_jailed({**settings, "writable": (ws.path("cache"),)}, ws,
                          expand(gate, on_base, ws, settings), timeout=gate["timeout"],
                          env=gate["env"])
        report.log(log, f"{done.output}[baseline {gate['name']}: exit {done.returncode}]")
        tests = junit_failures(junit)[1] if gate["junit"] and os.path.exists(junit) else {}
        result = {"exit_code": done.returncode, "findings": findings(done.output), "tests": tests}
    finally:
        git.restore(ws.repo, meta["base_sha"], current)
    write_json(cached, result)
    return result


def judge_against_base(ws: Workspace, gate: dict[str, Any], files: list[str],
                       settings: dict[str, Any], done: Any, junit: str | None,
                       log: str) -> dict[str, Any]:
    """The gate's verdict once what already failed on the base is taken out."""
    base = run_on_base(ws, gate, files, settings, log)
    name = gate["name"]
    if junit and os.path.exists(junit) and base["tests"]:
        tests = classify(base["tests"], junit_failures(junit)[1])
        if tests["pass->fail"]:
            reason = f"{name}: {tests['pass->fail'][0]} failed (passed on the base)"
            return {"verdict": "fail", "reason": reason, "baseline": {"tests": tests}}
        kept = len(tests["fail->fail"])
        return {"verdict": "pass", "reason": f"{name}: {kept} test(s) already failing on the base",
                "baseline": {"tests": tests}}
    new = sorted(set(findings(done.output)) - set(base["findings"]))
    if base["exit_code"] != 0 and not new:
        pre = len(base["findings"])
        return {"verdict": "pass", "reason": f"{name}: failure pre-existing on the base ({pre} "
                "finding(s)), none added by the patch", "baseline": {"findings": base["findings"]}}
    if new:
        return {"verdict": "fail", "reason": f"{name}: {new[0]} (new; not on the base)",
                "baseline": {"new_findings": new}}
    return {}

"""doit verify patch=P: workspace, apply, scope, gates, result, archive — one chain per issue."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator
from typing import Any

from doit.tools import config_changed

from . import (
    archive,
    claims,
    cluster,
    config,
    faults,
    filing,
    forge,
    git,
    jail,
    journal,
    live_changed,
    lock,
    prepare,
    provenance,
    report,
    seal,
    steps,
    verdicts,
    workspace,
)
from .apply import (
    STRIP_MEMO,
    apply_patch,
    check_diff_paths,
    kind_of,
    resolve_patch,
    script_files,
    unpack_zip,
)
from .errors import PatchgateError
from .gates import GateInputs, run_gate
from .issue import check_issue
from .live_changed import applied_note
from .liveguard import capture_live, check_live_guard
from .scope import check_scope, judge
from .settings import RULES, settings_of
from .steps import failed_creator, read_json, sha256_file, step, write_json
from .workspace import Workspace, ensure, is_intact

NEEDS_PATCH = (
    "verify needs patch=PATH (a file under patches/, a glob or a comma-separated list) or issue=ID"
    "; pass one of them"
)


def requested_patches(root: str, raw: str) -> list[str]:
    """patch= as a path, a glob, or a comma-separated list of either; sorted, deduplicated."""
    found: list[str] = []
    for item in (p.strip() for p in raw.split(",") if p.strip()):
        if glob.has_magic(item):
            matches = sorted(glob.glob(os.path.join(root, item)))
            if not matches:
                raise PatchgateError(
                    "PREFLIGHT", f"patch={item} matches no file; check the pattern"
                )
            found += [resolve_patch(root, m) for m in matches]
        else:
            found.append(resolve_patch(root, item))
    return sorted(set(found))


def declared_files(patch: str) -> list[str]:
    """FILES known before any work: a script's FILES; a diff's come from its headers in apply."""
    kind = kind_of(patch)
    if kind == "script":
        return script_files(patch)
    if kind == "diff":
        check_diff_paths(patch, "PREFLIGHT")
        claimed = claims.read_claims(patch)  # issue 14: FILES a model claimed for its diff
        if claimed is not None:
            return claimed.files
    if kind == "zip":
        # Checked now so an empty zip is refused before any work starts.
        unpack_zip(patch, None)
    return []


def final_changes(ws: Workspace, gates: list[config.Gate]) -> dict[str, Any]:
    """The last source of truth for the workspace content: the last fixer that ran, else apply."""
    source: dict[str, Any] = read_json(ws.step_file("apply"))
    for gate in gates:
        path = ws.gate_file(gate.name)
        if gate.fixes and os.path.exists(path):
            source = read_json(path)
    return source


def build_result(
    ws: Workspace, gates: list[config.Gate], stage: str = "", reason: str = ""
) -> workspace.Result:
    meta = ws.read_meta()
    gate_results: dict[str, Any] = {}
    for gate in gates:
        path = ws.gate_file(gate.name)
        if os.path.exists(path):
            rec = read_json(path)
            gate_results[gate.name] = {
                k: rec.get(k)
                for k in ("verdict", "reason", "exit_code", "duration_seconds", "checked")
            }
    build = gate_results.get("build", {}).get("verdict")
    tests = [
        {
            "command": " ".join(g.command),
            "exit_code": gate_results[g.name]["exit_code"],
            "duration_seconds": gate_results[g.name]["duration_seconds"],
        }
        for g in gates
        if g.atlas == "test" and gate_results.get(g.name, {}).get("exit_code") is not None
    ]
    changes = final_changes(ws, gates) if os.path.exists(ws.step_file("apply")) else None
    status = "fail" if stage else "pass"
    files = sorted(c["path"] for c in changes["changes"]) if changes else []
    summary = (
        {"RESULT": "FAIL", "STAGE": stage, "REASON": reason}
        if stage
        else {"RESULT": "SUCCESS", "FILES": ", ".join(files) or "(none)"}
    )
    moved = None if stage else applied_note(ws)  # what live_changed did (issue 11, item 8)
    if moved:
        summary["NOTE"] = moved
    if not stage:  # issue 11: what a fixer changed, what the baseline excused
        summary.update(verdicts.summary_lines([g.name for g in gates], ws.gate_file))
    return workspace.Result(
        patch_id=patch_id(ws.issue, meta.patch_sha256),
        issue=ws.issue,
        patch=meta.patch,
        base_sha=meta.base_sha,
        patch_sha256=meta.patch_sha256,
        build_status="not_run" if build in (None, "skipped") else build,
        test_results=tests,
        gates=gate_results,
        verification_status=status,
        stage=stage or None,
        reason=reason or None,
        tree=changes["tree"] if changes else None,
        files=files,
        changes=changes["changes"] if changes else [],
        summary=summary,
    )


def patch_id(issue: str, patch_sha256: str) -> str:
    return f"{issue}@{patch_sha256[:12]}"


def record_verdict(ws: Workspace, result: workspace.Result) -> None:
    """result.json (sealed) and its verify event; a cluster's result names its worker."""
    write_json(ws.result, result.to_json(), workspace.RESULT_SCHEMA)
    seal.seal(ws.root, ws.result)  # issue 12: promote lands only what verify wrote
    faults.point("verify-result-written")
    event: dict[str, Any] = {
        "event": provenance.EventKind.VERIFY_PASS
        if result.verification_status == "pass"
        else provenance.EventKind.VERIFY_FAIL,
        "patch_id": result.patch_id,
        "issue": ws.issue,
        "build_status": result.build_status,
        "test_results": result.test_results,
        "gates": {k: v["verdict"] for k, v in result.gates.items()},
        "affected_files": result.files,
    }
    if result.verified_by:  # issue 17: the worker that verified
        event["verified_by"] = {k: result.verified_by[k] for k in ("executor", "worker")}
    if result.stage:
        event.update(stage=result.stage, reason=result.reason)
    provenance.append_event(ws.root, event)
    forge.after_verify(ws.root, ws.issue, event)  # issue 15: trigger=github:N; never fails


def conclude_failure(ws_dir: str, stage: str, reason: str) -> None:
    """Any verify step that fails: result.json says fail, the log of events says verify_fail."""
    ws = Workspace.at(ws_dir)
    if not os.path.exists(ws.meta):
        return
    live = ws.read_meta().live_repo
    try:
        check_live_guard(ws, live)
    except PatchgateError as err:
        stage, reason = err.stage, err.message
    filing.file_failed(ws.root, ws.read_meta().patch)  # a copy in patches/unsuccessful/
    gates = claims.gates_of(config.load(ws.root, {}), ws.read_meta().patch)
    record_verdict(ws, build_result(ws, gates, stage, reason))


def conclude(ws_dir: str, gates: list[config.Gate], rules: dict[str, bool], log: str) -> None:
    """Action of the final step: the live guard, the scope of fixer edits, result.json."""
    ws = Workspace.at(ws_dir)
    check_live_guard(ws, ws.read_meta().live_repo)
    final = final_changes(ws, gates)
    problems = judge(final["files"], final["changes"], rules)
    if problems:
        raise PatchgateError("SCOPE", f"after the fixing gates: {problems[0]}")
    result = build_result(ws, gates)
    failed = [g for g, r in result.gates.items() if r["verdict"] == "fail"]
    if failed:
        first = result.gates[failed[0]]["reason"]
        if not result_allows_failures(rules):
            raise PatchgateError("GATES", first)
        report.log(log, f"verify: gates failed but allow_gates_fail=1: {', '.join(failed)}")
    record_verdict(ws, result)
    report.log(log, f"verify: pass; tree {result.tree}")


def result_allows_failures(rules: dict[str, bool]) -> bool:
    return bool(rules.get("allow_gates_fail"))


def build_archive(ws_dir: str, log: str) -> None:
    """patched.zip: the run log, result.json and the changed files of the verified tree."""
    ws = Workspace.at(ws_dir)
    result = ws.read_result()
    report.log(log, f"archive: {len(result.changes)} changed path(s) of tree {result.tree}")
    entries = archive.tree_entries(ws.repo, result.changes, "files/")
    entries.append(archive.file_entry("result.json", ws.result))
    entries.append(archive.file_entry("verify.log", log))
    archive.write_zip(ws.archive, entries)
    report.log(log, f"archive: {os.path.relpath(ws.archive, ws.root)} ({len(entries)} entries)")


def remembered_strip(ws: Workspace, patch_sha: str) -> int | None:
    """The strip=N this very patch was applied with, when one was given (apply's STRIP_MEMO)."""
    try:
        memo = read_json(ws.path(STRIP_MEMO))
    except (OSError, ValueError):
        return None
    return int(memo["strip"]) if memo.get("patch_sha256") == patch_sha else None


def chain(
    cfg: config.Config,
    patch: str,
    issue: str,
    base: str,
    warning: str | None,
    carry: dict[str, Any] | None = None,
    basename: str = "verify",
    message: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The subtasks of one issue; staleness flows through file_dep on upstream targets."""
    root, live = cfg.root, cfg.live_repo
    ws = Workspace(root, issue)
    group = f"issue_{issue}"
    log = report.log_path(root, group)
    common: dict[str, Any] = {
        "root": root,
        "log": log,
        "warning": warning,
        "before_first_step": (capture_live, (ws.dir, live)),
    }
    try:
        lock.hold_issue(root, issue, f"doit {basename}")  # for this whole doit run
    except PatchgateError as err:
        yield failed_creator(group, root, log, err, f"{issue}-preflight")
        return
    try:
        declared = declared_files(patch)
        patch_sha = sha256_file(patch)
    except PatchgateError as err:  # the patch itself is refused: filed as unsuccessful
        failed = step(
            group,
            f"{issue}-preflight",
            filing.refuse_filed,
            [root, patch, err.stage, err.message],
            root=root,
            log=log,
            stage=err.stage,
            doc="refuse bad input",
            uptodate=[False],
        )
        yield failed
        return
    if cluster.wanted(cfg, ws, carry):  # issue 17: executor=dask, one step
        yield cluster.cluster_step(cfg, patch, issue, base, patch_sha, log, warning)
        return
    settings = settings_of(cfg)
    if settings.strip is None:  # promote issue=ID after verify ... strip=N: the same N
        settings = dataclasses.replace(settings, strip=remembered_strip(ws, patch_sha))
    rules = {k: cfg[k] for k in RULES}
    gates = claims.gates_of(cfg, patch)  # + a diff's claimed model tests (issue 14)
    sidecar = [claims.sidecar_of(patch)] if os.path.isfile(claims.sidecar_of(patch)) else []
    fail_hook = conclude_failure
    yield step(
        group,
        f"{issue}-workspace",
        ensure,
        [ws.dir, live, base, patch, patch_sha, log, message],
        **common,
        stage="WORKSPACE",
        doc="worktree of live at its HEAD (reused across attempts)",
        targets=[ws.meta],
        uptodate=[
            config_changed({"base": base, "live": live, "patch": patch, "sha": patch_sha}),
            is_intact(ws),
            message is None or kept_message(ws) == message,  # verify … message=M: into meta
        ],
    )
    apply_cfg = {k: settings.to_json()[k] for k in ("strip", "jail", "tool_env", "jail_binds")}
    # A rebase plan is no apply input of its own (meta.json's new base is): dropping it on the
    # next run must not rerun apply.
    apply_cfg["carry"] = carry if carry and carry["mode"] != "rebase" else None
    yield step(
        group,
        f"{issue}-apply",
        apply_patch,
        [ws.dir, patch, declared, settings, log, carry],
        **common,
        stage="APPLY",
        doc="apply the patch in the workspace, record what changed",
        file_dep=[patch, ws.meta, *sidecar],
        targets=[ws.step_file("apply")],
        uptodate=[config_changed(apply_cfg)],
        on_failure=fail_hook,
    )
    yield step(
        group,
        f"{issue}-scope",
        check_scope,
        [ws.dir, ws.step_file("apply"), rules, log],
        **common,
        stage="SCOPE",
        doc="the changed paths must be the declared FILES",
        file_dep=[ws.step_file("apply")],
        targets=[ws.step_file("scope")],
        uptodate=[config_changed(rules)],
        on_failure=fail_hook,
    )
    # basename: rollback verifies its revert with this same chain, under its own task names.
    source, previous = ws.step_file("apply"), f"{basename}:{issue}-scope"
    for gate in gates:
        name = f"{issue}-gate-{gate.name}"
        yield step(
            group,
            name,
            run_gate,
            [ws.dir, gate, source, settings, log],
            **common,
            stage="GATES",
            doc=f"gate {gate.name}: {' '.join(gate.command)}",
            targets=[ws.gate_file(gate.name)],
            task_dep=[previous],
            uptodate=[GateInputs(gate, source, ws.meta, settings)],
            on_failure=fail_hook,
        )
        previous = f"{basename}:{name}"
        if gate.fixes:
            source = ws.gate_file(gate.name)
    gate_files = [ws.gate_file(g.name) for g in gates]
    yield step(
        group,
        issue,
        conclude,
        [ws.dir, gates, {**rules, "allow_gates_fail": settings.allow_gates_fail}, log],
        **common,
        stage="VERIFY",
        doc="the verification result: result.json",
        # Not meta.json: a patch edit that yields the same tree must not rerun the verdict.
        file_dep=[ws.step_file("apply"), ws.step_file("scope"), *gate_files],
        targets=[ws.result],
        task_dep=[previous],
        on_failure=fail_hook,
        uptodate=[config_changed({"allow_gates_fail": settings.allow_gates_fail})],
    )
    yield step(
        group,
        f"{issue}-archive",
        build_archive,
        [ws.dir, log],
        **common,
        stage="ARCHIVE",
        doc="patched.zip: log, result.json, changed files",
        summary=ws.result,
        file_dep=[ws.result],
        targets=[ws.archive],
    )


def plan_rebase(cfg: config.Config, ws: Workspace, head: str) -> tuple[str, dict[str, Any] | None]:
    """Re-verifying an existing workspace: (base, carry) under the live_changed policy.

    Live did not move: same base, no plan. Live moved: the plan of live_changed.plan — the
    patch runs again on the new base (rebase; also whenever live moved in other files only),
    or the verified changes are carried onto it (overwrite_live merges them three-way into
    live's version, overwrite_workspace keeps live's version of the files live changed), or
    fail refuses. Either way the combination is verified again, and apply refuses a tree that
    reverts what landed on live meanwhile (live_changed.check_kept; docs/live-changed.md).
    """
    meta = ws.read_meta()
    if head == meta.base_sha or not os.path.exists(ws.result):
        return head, None
    verified = ws.read_result()
    return head, live_changed.plan(cfg.live_repo, meta, head, verified, cfg["live_changed"])


def kept_message(ws: Workspace) -> str | None:
    """The commit message ``doit verify … message=M`` kept in meta.json, if any."""
    try:
        return ws.read_meta().message
    except (OSError, ValueError, PatchgateError):
        return None


def existing_workspace(root: str, issue: str) -> Workspace:
    check_issue(issue)
    ws = Workspace(root, issue)
    if not os.path.exists(ws.meta):
        raise PatchgateError(
            "PREFLIGHT", f"no workspace for issue {issue}; run doit verify patch=PATH first"
        )
    return ws


# The verify chains declared in this doit run: issue -> the names of its tasks.
_DECLARED: dict[str, list[str]] = {}


def once(issue: str, tasks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Issue ``issue``'s verify chain, unless this run declared it already: doit verify's and
    doit promote's creators both plan it for ``doit verify patch=P promote issue=P``."""
    if issue in _DECLARED:
        return
    names = _DECLARED[issue] = []
    for task in tasks:
        names.append(task["name"])
        yield task


def declared(issue: str) -> list[str]:
    """The task names (before doit prefixes them) of issue ``issue``'s verify chain."""
    return list(_DECLARED.get(issue, ()))


def requested_chains(
    cfg: config.Config, head: str, warning: str | None, message: str | None = None
) -> Iterator[dict[str, Any]]:
    """verify patch=... starts from live HEAD; verify issue=ID re-verifies that workspace."""
    root = cfg.root
    raw, issue = config.variable("patch"), config.variable("issue")
    if filing.wants_latest(config.variable("latest")):  # AM -l: the newest patch in patches/
        if raw is not None:
            raise PatchgateError("PREFLIGHT", "latest=1 picks the patch itself; drop patch=")
        raw = filing.newest_patch(root)
    if raw is None:
        if issue is None:
            raise PatchgateError("PREFLIGHT", NEEDS_PATCH)
        ws = existing_workspace(root, issue)
        patch = ws.read_meta().patch
        if not os.path.exists(patch):
            raise PatchgateError(
                "PREFLIGHT",
                f"the patch of issue {issue} ({patch}) is gone; verify a patch with patch=PATH",
            )
        base, carry = plan_rebase(cfg, ws, head)
        yield from once(issue, chain(cfg, patch, issue, base, warning, carry, message=message))
        return
    patches = requested_patches(root, raw)
    if issue is not None and len(patches) > 1:
        raise PatchgateError("PREFLIGHT", "issue= names one patch; drop it to verify several")
    stems: dict[str, str] = {}
    for patch in patches:
        stem = os.path.splitext(os.path.basename(patch))[0]
        if stem in stems:
            raise PatchgateError(
                "PREFLIGHT",
                f"{os.path.relpath(stems[stem], root)} and {os.path.relpath(patch, root)} would "
                f"both be issue {stem}; rename one, or verify each alone with issue=ID",
            )
        stems[stem] = patch
    for patch in patches:
        stem = issue or os.path.splitext(os.path.basename(patch))[0]
        try:
            check_issue(stem)
        except PatchgateError as err:
            yield failed_creator(
                "verify", root, report.log_path(root, "verify"), err, f"{stem}-preflight"
            )
            continue
        yield from once(stem, chain(cfg, patch, stem, head, warning, message=message))


VERIFY_VARIABLES = ("patch", "issue", "latest")  # latest=1: issue 11


def prepare_verification(root: str) -> dict[str, Any]:
    """Action of _verify, before verify's tasks are planned: recover an interrupted landing,
    patches/ writable, live readable, the jail probe (its warning goes on every step)."""
    if all(config.variable(name) is None for name in VERIFY_VARIABLES):
        return {"warning": None}  # the creator names what is missing
    journal.recover_first(root, report.log_path(root, "verify"))
    steps.require_writable(root)
    cfg = config.load(root)
    git.live_head(cfg.live_repo)
    return {"warning": jail.preflight(cfg["jail"])}


def task__verify() -> dict[str, Any]:
    """(internal) What a verification does before its tasks are planned (see ``prepare``)."""
    return prepare.setup_task("verify", prepare_verification, [os.getcwd()])


@prepare.after("verify")
def task_verify() -> Iterator[dict[str, Any]]:
    """Verify patches in their workspaces: apply, scope, gates, result, archive.

    patch=PATH|GLOB|A,B   patch file(s) under patches/ (.py script, .diff/.patch, .zip)
    issue=ID              issue id (default: the patch file's stem); without patch=,
                          re-verify the existing workspace of ID (live_changed= decides the base)
    latest=1              the newest patch (by mtime) directly in patches/ (AM -l)
    message="…"           commit subject kept in meta.json for a later doit promote issue=ID
    strip=N allow_undeclared=1 allow_untouched=1 allow_noop=1 all_gates=1 keep_going=1
    allow_gates_fail=1 baseline=1 jail=none   (see `doit config`)
    """
    # Created after _verify ran, and only when doit verify runs (doit promote declares the
    # verify chain it lands itself): doit list and help call it at once, and it plans nothing.
    root = os.getcwd()
    log = report.log_path(root, "verify")
    try:
        if all(config.variable(name) is None for name in VERIFY_VARIABLES):
            # Not a verification (doit list, help, status, audit, …): plan nothing, touch
            # nothing; only an unknown variable is named before the usage line.
            config.load(root)
            raise PatchgateError("PREFLIGHT", NEEDS_PATCH)
        prepared = prepare.outcome(root, "verify")
        if prepared is None:  # doit list or help with patch=: describe, touch nothing
            raise PatchgateError(
                "PREFLIGHT", "not asked for on this command line; run it as: doit verify patch=PATH"
            )
        refused = prepare.error_of(prepared)
        if refused is not None:
            raise refused
        cfg = config.load(root)
        head = git.live_head(cfg.live_repo)
        message = config.variable("message")  # kept in meta.json for a later promote
        tasks = list(requested_chains(cfg, head, prepared["warning"], message))
    except PatchgateError as err:
        yield failed_creator("verify", root, log, err)
        return
    yield from tasks

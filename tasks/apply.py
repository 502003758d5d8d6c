"""The apply step: run a patch script, or git-apply a diff or a zip of diffs, in the jail."""

from __future__ import annotations

import ast
import contextlib
import os
import posixpath
import zipfile
from collections.abc import Sequence
from typing import Any

from tasks import faults, git, jail, proc, report
from tasks.errors import PatchgateError
from tasks.steps import write_json
from tasks.workspace import Workspace, attempt, mark_tree, wait_live_capture

PATCHES_DIR = "patches"
KINDS = {".py": "script", ".diff": "diff", ".patch": "diff", ".zip": "zip"}
MAX_STRIP = 3


def resolve_patch(root: str, raw: str) -> str:
    """The patch's absolute path; refused unless it is an existing file under patches/."""
    inbox = os.path.realpath(os.path.join(root, PATCHES_DIR))
    candidate = raw if os.path.isabs(raw) else os.path.join(root, raw)
    if not os.path.isabs(raw) and not os.path.exists(candidate):
        candidate = os.path.join(inbox, raw)  # AM style: a bare name is looked up in patches/
    path = os.path.realpath(candidate)
    if os.path.commonpath([path, inbox]) != inbox:
        raise PatchgateError(
            "PREFLIGHT", f"patch {raw} is outside patches/; move it into {PATCHES_DIR}/ and retry"
        )
    if not os.path.isfile(path):
        raise PatchgateError("PREFLIGHT", f"patch {raw} does not exist; check the path")
    kind_of(path)
    return path


def kind_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in KINDS:
        raise PatchgateError(
            "PREFLIGHT",
            f"patch {os.path.basename(path)} has an unknown kind {ext or '(no extension)'}; "
            "use a .py patch script, a .diff/.patch unified diff or a .zip of .patch files",
        )
    return KINDS[ext]


def check_declared(paths: Sequence[str], source: str) -> list[str]:
    """Normalised repo-relative paths; absolute, '..' and .git paths are refused."""
    clean = []
    for raw in paths:
        norm = posixpath.normpath(raw)
        parts = norm.split("/")
        if raw.startswith("/") or os.path.isabs(raw):
            why = "is absolute"
        elif ".." in parts:
            why = "contains '..'"
        elif parts[0] == ".git":
            why = "points into .git"
        elif norm in ("", "."):
            why = "is empty"
        else:
            clean.append(norm)
            continue
        raise PatchgateError(
            "PREFLIGHT", f"{source}: FILES entry {raw!r} {why}; list repo-relative paths only"
        )
    return sorted(set(clean))


def script_files(path: str) -> list[str]:
    """FILES of a patch script, read with ast: the script does not run."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=name)
    except SyntaxError as exc:
        raise PatchgateError(
            "PREFLIGHT", f"patch {name} line {exc.lineno}: syntax error ({exc.msg}); fix the script"
        ) from None
    except UnicodeDecodeError:
        raise PatchgateError("PREFLIGHT", f"patch {name} is not UTF-8 text") from None
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == "FILES" for t in targets):
            value: Any = None
            with contextlib.suppress(ValueError):
                value = ast.literal_eval(node.value) if node.value is not None else None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PatchgateError(
                    "PREFLIGHT",
                    f"patch {name}: FILES must be a literal list of strings, "
                    'e.g. FILES = ["src/app.py"]',
                )
            return check_declared(value, f"patch {name}")
    raise PatchgateError(
        "PREFLIGHT", f'patch {name} declares no FILES; add FILES = ["path", ...] at the top'
    )


def jail_spec(
    settings: dict[str, Any], ws: Workspace, readonly: Sequence[str] = ()
) -> jail.JailSpec:
    return jail.JailSpec(
        mode=settings["jail"],
        workdir=ws.repo,
        extra_writable=tuple(settings.get("writable", ())),
        readonly=(settings["tool_env"], *settings["jail_binds"], *readonly),
        uid=settings["jail_uid"],
        max_processes=settings["max_processes"],
        max_memory_mb=settings["max_memory_mb"],
        workdir_readonly=bool(settings.get("repo_readonly")),
    )


def jail_env(settings: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = proc.clean_env(extra)
    env["PATH"] = f"{settings['tool_env']}/bin:/usr/local/bin:/usr/bin:/bin"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HOME"] = "/tmp"
    return env


def run_jailed(
    settings: dict[str, Any],
    ws: Workspace,
    argv: Sequence[str],
    *,
    timeout: float,
    readonly: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> proc.Completed:
    return jail.run(
        argv,
        jail_spec(settings, ws, readonly),
        env=jail_env(settings, env),
        timeout=timeout,
        output_cap=int(settings["output_cap_mb"] * 1024 * 1024),
    )


def _logged(log: str, title: str, argv: Sequence[str], done: proc.Completed) -> None:
    report.log(
        log,
        f"$ {' '.join(argv)}\n{done.output}[{title}: exit {done.returncode}, {done.duration:.2f}s]",
    )


def _last_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_script(settings: dict[str, Any], ws: Workspace, patch: str, log: str) -> None:
    python = os.path.join(settings["tool_env"], "bin", "python")
    done = run_jailed(
        settings, ws, (python, patch), timeout=settings["patch_timeout"], readonly=(patch,)
    )
    _logged(log, "patch script", (python, os.path.relpath(patch, ws.root)), done)
    if done.timed_out:
        raise PatchgateError(
            "APPLY",
            f"patch script timed out after {settings['patch_timeout']}s and was killed; "
            "fix the patch or raise patch_timeout",
        )
    if done.returncode != 0:
        raise PatchgateError(
            "APPLY",
            f"patch script failed (exit {done.returncode}): {_last_line(done.output)}; "
            "fix the patch and verify again",
        )


def _git_apply(settings: dict[str, Any], ws: Workspace, diff: str, *flags: str) -> proc.Completed:
    return run_jailed(
        settings,
        ws,
        ("git", "apply", "--whitespace=nowarn", *flags, diff),
        timeout=settings["patch_timeout"],
        readonly=(diff,),
    )


def header_names(diff: str) -> list[str]:
    """The file names of a unified diff's ``---``/``+++`` header lines, as written."""
    with open(diff, encoding="utf-8", errors="replace") as fh:
        return [
            ln.split(None, 1)[1].split("\t")[0].rstrip("\n")
            for ln in fh
            if ln.startswith(("--- ", "+++ ")) and len(ln.split(None, 1)) == 2
        ]


def _has_ab_prefixes(diff: str) -> bool:
    names = header_names(diff)
    return bool(names) and all(n == "/dev/null" or n.startswith(("a/", "b/")) for n in names)


def check_diff_paths(diff: str, stage: str) -> None:
    """A diff naming a path outside the repository (``..``, absolute) is refused as written.

    Without this, strip inference would find the level at which ``a/../x`` is ``x`` and apply
    it there: not what the diff says.
    """
    for name in header_names(diff):
        if name == "/dev/null":
            continue
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            raise PatchgateError(
                stage,
                f"diff {os.path.basename(diff)} names {name}, a path outside the repository; "
                "regenerate it with repo-relative paths (git diff)",
            )


def infer_strip(settings: dict[str, Any], ws: Workspace, diff: str, log: str) -> int:
    """The -p level at which the diff applies; ambiguity is an error naming strip=N."""
    name = os.path.basename(diff)
    if settings["strip"] is not None:
        return int(settings["strip"])
    tried = {n: _git_apply(settings, ws, diff, "--check", f"-p{n}") for n in range(MAX_STRIP + 1)}
    fits = [n for n, done in tried.items() if done.returncode == 0]
    if len(fits) > 1 and 1 in fits and _has_ab_prefixes(diff):
        fits = [1]  # git's own a/ b/ convention settles it
    if len(fits) == 1:
        report.log(log, f"apply: {name} applies at strip level {fits[0]}")
        return fits[0]
    if fits:
        levels = ", ".join(str(n) for n in fits)
        raise PatchgateError(
            "APPLY", f"diff {name} applies at several strip levels ({levels}); pass strip=N"
        )
    first = _last_line(tried[1 if _has_ab_prefixes(diff) else 0].output)
    raise PatchgateError(
        "APPLY",
        f"diff {name} does not apply to the base: {first}; "
        "regenerate it against the current live HEAD",
    )


def diff_files(settings: dict[str, Any], ws: Workspace, diff: str, strip: int) -> list[str]:
    done = _git_apply(settings, ws, diff, "--numstat", "-z", f"-p{strip}")
    paths = [p for p in done.output.split("\0") if p]
    names = [p.split("\t", 2)[2] if p.count("\t") >= 2 else p for p in paths]
    return check_declared([n for n in names if n], f"diff {os.path.basename(diff)}")


def apply_diff(settings: dict[str, Any], ws: Workspace, diff: str, log: str) -> list[str]:
    check_diff_paths(diff, "APPLY")
    strip = infer_strip(settings, ws, diff, log)
    files = diff_files(settings, ws, diff, strip)
    done = _git_apply(settings, ws, diff, f"-p{strip}")
    _logged(log, "git apply", ("git", "apply", f"-p{strip}", os.path.basename(diff)), done)
    if done.returncode != 0:
        raise PatchgateError(
            "APPLY",
            f"git apply {os.path.basename(diff)} failed: "
            f"{_last_line(done.output)}; regenerate the diff",
        )
    return files


def unpack_zip(path: str, dest: str) -> list[str]:
    """The zip's .patch/.diff members, sorted, written flat: no path from the zip is used."""
    name = os.path.basename(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted(m for m in zf.namelist() if m.endswith((".patch", ".diff")))
            if not members:
                raise PatchgateError("PREFLIGHT", f"zip {name} holds no .patch files; add some")
            os.makedirs(dest, exist_ok=True)
            out = []
            for i, member in enumerate(members):
                target = os.path.join(dest, f"{i:04d}.patch")
                with open(target, "wb") as fh:
                    fh.write(zf.read(member))
                out.append(target)
            return out
    except zipfile.BadZipFile:
        raise PatchgateError(
            "PREFLIGHT", f"{name} is not a valid zip file; re-create it with zip"
        ) from None


def lay_tree(ws: Workspace, carry: dict[str, Any], log: str) -> list[str]:
    """Carry a verified tree's changes onto the new base (live_changed=overwrite_*)."""
    kept = git.overlay(ws.repo, carry["base_tree"], carry["tree"], skip=carry["drop"])
    dropped = ", ".join(carry["drop"]) or "none"
    report.log(
        log,
        f"apply: carried {len(kept)} verified path(s) onto the new base; "
        f"kept live's version of: {dropped}",
    )
    return [f for f in carry["files"] if f not in carry["drop"]]


def check_unconverted(repo: str, changes: list[git.Change]) -> None:
    """What lands must be the bytes the gates test: refuse a file git would store converted."""
    odd = git.converted(repo, changes)
    if odd:
        raise PatchgateError(
            "SCOPE",
            f"git would store other bytes than the gates test for {', '.join(odd)} (a "
            ".gitattributes filter, working-tree-encoding or ident conversion applies); "
            "write the files as git stores them, or drop that attribute",
        )


def apply_patch(
    ws_dir: str,
    patch: str,
    declared: list[str],
    settings: dict[str, Any],
    log: str,
    carry: dict[str, Any] | None = None,
) -> None:
    """Action of the apply step: base, patch, snapshot; on any failure the base is put back."""
    ws = Workspace.at(ws_dir)
    kind = kind_of(patch)
    report.log(log, f"apply: {kind} {os.path.relpath(patch, ws.root)} in {ws.repo}")
    with attempt(ws) as base:
        wait_live_capture(ws.dir)  # the live guard's "before" is taken: the patch may run
        if carry is not None:
            kind = "carry"
            files = lay_tree(ws, carry, log)
        elif kind == "script":
            run_script(settings, ws, patch, log)
            files = declared
        elif kind == "diff":
            files = apply_diff(settings, ws, patch, log)
        else:
            files = []
            for part in unpack_zip(patch, ws.path("unzipped")):
                files += apply_diff(settings, ws, part, log)
        faults.point("apply-ran")
        tree = git.snapshot(ws.repo, ws.index)
        ignored = git.remove_ignored(ws.repo)
        changes = git.diff_trees(ws.repo, git.tree_of(ws.repo, base), tree)
        check_unconverted(ws.repo, changes)
    mark_tree(ws, tree)
    report.log(log, f"apply: {len(changes)} changed path(s)")
    if ignored:
        report.log(
            log,
            f"apply: removed {len(ignored)} path(s) the patch wrote that git ignores (not part "
            f"of the patch, so the gates do not see them): {', '.join(ignored)}",
        )
    # Only content goes in: a patch edit that produces the same tree leaves this file
    # byte-identical, so doit reruns nothing downstream.
    write_json(
        ws.step_file("apply"),
        {
            "method": kind,
            "files": sorted(set(files)),
            "tree": tree,
            "changes": [c.as_dict() for c in changes],
        },
        "step-result.schema.json",
    )

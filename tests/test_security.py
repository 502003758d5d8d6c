"""Issue 12: the holes an attacker found stay closed. Real git, real bwrap, real doit runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from conftest import ADD_MUL, CALC, ROOT, Project, ProjectFactory, git, make_repo, script
from patchgate import git as pg_git
from patchgate import provenance, scope, seal
from patchgate.errors import PatchgateError
from patchgate.workspace import Result, Workspace
from test_audit import audit_fails, three_patches
from test_promote import add_remote, head

HOOKS = (
    "pre-commit", "post-commit", "post-checkout", "post-index-change", "reference-transaction",
    "pre-push", "post-rewrite", "pre-auto-gc", "post-merge",
)  # fmt: skip


def hook_text(marker: Path) -> str:
    return f'#!/bin/sh\necho "$0" >> {marker}\n'


def land(project: Project, issue: str, text: str) -> None:
    patch = project.patch(f"{issue}.py", text)
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    res = project.run("promote", f"issue={issue}")
    assert res.code == 0, res.out
    assert res.summary["PUSH"] == "OK"


# --- 2. hooks never run outside the jail -----------------------------------------------------


def test_hooks_a_patch_writes_under_a_relative_hooks_path_never_run(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project()
    bare = add_remote(project)
    git(project.live, "config", "core.hooksPath", "hooks")  # as husky sets it
    marker = tmp_path / "ran.txt"
    names = [f"hooks/{name}" for name in HOOKS]
    body = "\n".join(
        f"Path({name!r}).parent.mkdir(exist_ok=True)\n"
        f"Path({name!r}).write_text({hook_text(marker)!r})\n"
        f"Path({name!r}).chmod(0o755)"
        for name in names
    )
    land(project, "hooks", script(names, body))
    assert (project.live / "hooks" / "pre-push").stat().st_mode & stat.S_IXUSR
    assert git(bare, "rev-parse", "main") == head(project.live)
    assert not marker.exists(), marker.read_text()


def test_live_git_hooks_never_run_during_verify_and_promote(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    project = make_project()
    add_remote(project)
    marker = tmp_path / "ran.txt"
    hooks = project.live / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in HOOKS:
        (hooks / name).write_text(hook_text(marker))
        (hooks / name).chmod(0o755)
    land(project, "add_mul", ADD_MUL)
    assert not marker.exists(), marker.read_text()


# --- 3. change lists are whole, and large ones are handled ------------------------------------


def test_a_change_list_past_the_output_cap_is_whole(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(repo))
    blob = subprocess.run(
        ("git", "-C", str(repo), "hash-object", "-w", "--stdin"),
        input=b"x\n", capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    count = 45_000  # 250-byte names: ~13 MiB of diff-tree output, past proc's 10 MiB cap
    listing = "".join(f"100644 blob {blob}\t{n:0250d}\0" for n in range(count))
    listing += f"100644 blob {blob}\tzzz.py\0"
    tree = subprocess.run(
        ("git", "-C", str(repo), "mktree", "-z"),
        input=listing.encode(), capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    changes = pg_git.diff_trees(str(repo), pg_git.EMPTY_TREE, tree)
    assert len(changes) == count + 1
    assert changes[-1].path == "zzz.py"


@pytest.mark.parametrize("cut", [-1, -60, -200])
def test_a_cut_change_list_is_refused(cut: int) -> None:
    blob = "a" * 40
    raw = "".join(f":000000 100644 {'0' * 40} {blob} A\0file{n}.py\0" for n in range(3))
    assert len(pg_git.parse_raw_diff(raw, "t")) == 3
    with pytest.raises(PatchgateError, match=r"cut short|does not write"):
        pg_git.parse_raw_diff(raw[:cut], "t")


def test_scope_judges_100k_paths_in_linear_time() -> None:
    changes = [
        {"path": f"d{n % 100}/f{n}.py", "status": "A", "mode": "100644", "blob": "0" * 40}
        for n in range(100_000)
    ]
    declared = [c["path"] for c in changes]
    rules = {"allow_noop": False, "allow_undeclared": False, "allow_untouched": False}
    start = time.monotonic()
    assert scope.judge(declared, changes, rules) == []
    assert time.monotonic() - start < 5.0


def test_thousands_of_long_paths_fit_git_command_lines(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(repo))
    deep = repo / ("a" * 250) / ("b" * 250) / ("c" * 250)
    deep.mkdir(parents=True)
    paths = []
    for n in range(3400):
        (deep / f"f{n:05d}").write_text(f"{n}\n")
        paths.append(str((deep / f"f{n:05d}").relative_to(repo)))
    assert sum(len(p) + 1 for p in paths) > 2 * 1024 * 1024  # one command line: E2BIG
    ids = pg_git.out(str(repo), "hash-object", "--", *paths).split()
    assert len(ids) == 3400


# --- 4. the audit cannot be fooled ------------------------------------------------------------


def test_an_edit_of_the_same_length_with_its_mtime_put_back_is_audited(project: Project) -> None:
    three_patches(project)
    assert project.run("audit").code == 0
    log = project.path / provenance.LOG_PATH
    before = log.stat()
    data = log.read_bytes()
    assert data.count(b'"operator":"jsmith"') == 3
    log.write_bytes(data.replace(b'"operator":"jsmith"', b'"operator":"mallry"', 1))
    os.utime(log, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert log.stat().st_size == before.st_size

    assert "modified after writing" in audit_fails(project)


def crc_preserving_edit(data: bytes, window: int, target: int) -> bytes:
    """``data`` with the 4 bytes at ``window`` changed so that its CRC-32 is ``target``.

    CRC-32 is affine over GF(2): crc(x ^ d) = crc(x) ^ crc(d) ^ crc(0...0) for equal lengths;
    the 32 bits of a window span every difference, so Gaussian elimination finds the one needed.
    """
    zero = bytes(len(data))
    basis: list[tuple[int, int]] = []  # (crc difference, window bits), reduced
    for bit in range(32):
        delta = bytearray(len(data))
        delta[window + bit // 8] = 1 << (bit % 8)
        value, bits = zlib.crc32(bytes(delta)) ^ zlib.crc32(zero), 1 << bit
        for pivot_value, pivot_bits in basis:
            if value ^ pivot_value < value:
                value, bits = value ^ pivot_value, bits ^ pivot_bits
        if value:
            basis.append((value, bits))
            basis.sort(reverse=True)
    need, flips = zlib.crc32(data) ^ target, 0
    for pivot_value, pivot_bits in basis:
        if need ^ pivot_value < need:
            need, flips = need ^ pivot_value, flips ^ pivot_bits
    assert need == 0
    edited = bytearray(data)
    for bit in range(32):
        if flips >> bit & 1:
            edited[window + bit // 8] ^= 1 << (bit % 8)
    assert zlib.crc32(bytes(edited)) == target
    return bytes(edited)


def test_an_edit_that_keeps_the_crc32_of_the_verified_part_is_not_resumed(
    project: Project,
) -> None:
    three_patches(project)
    assert project.run("audit").code == 0
    log = project.path / provenance.LOG_PATH
    data = log.read_bytes()
    first_line_end = data.index(b"\n")
    edited = data.replace(b'"patch_id":"p0"', b'"patch_id":"p9"', 1)
    edited = crc_preserving_edit(edited, first_line_end - 10, zlib.crc32(data))
    assert len(edited) == len(data) and edited.endswith(data[data.rindex(b"\n", 0, -1) :])
    log.write_bytes(edited)
    provenance.append_event(str(project.path), {"event": "propose", "patch_id": "next"})

    reason = audit_fails(project)
    assert "line 1" in reason or "line 2" in reason, reason


# --- 7. promote lands only the tree verify recorded ---------------------------------------------


def other_tree(repo: Path, path: str, text: str) -> tuple[str, str]:
    """(tree, blob): HEAD's tree with ``path`` holding ``text``, in the object database only."""
    env = {**os.environ, "GIT_INDEX_FILE": str(repo.parent / "other.index")}

    def run(*args: str, data: str | None = None) -> str:
        return subprocess.run(
            ("git", "-C", str(repo), *args), input=data, env=env, text=True,
            capture_output=True, check=True,
        ).stdout.strip()  # fmt: skip

    blob = run("hash-object", "-w", "--stdin", data=text)
    run("read-tree", "HEAD")
    run("update-index", "--cacheinfo", f"100644,{blob},{path}")
    return run("write-tree"), blob


def test_a_swapped_result_tree_is_refused(make_project: ProjectFactory) -> None:
    project = make_project()
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    evil, blob = other_tree(project.live, "calc/ops.py", "import os\nos.system('id')\n")
    path = project.ws("add_mul") / "result.json"
    data = json.loads(path.read_text())
    data["changes"][0]["blob"] = blob
    data["tree"] = evil
    path.write_text(json.dumps(data))
    before = project.state()

    res = project.run("promote", "issue=add_mul")

    assert res.code != 0 and res.summary["STAGE"] == "PROMOTE", res.out
    assert "not the one verify wrote" in res.summary["REASON"]
    assert project.state() == before


def test_promote_checks_the_tree_against_the_step_records(make_project: ProjectFactory) -> None:
    project = make_project()
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    ws = Workspace.at(str(project.ws("add_mul")))
    result = json.loads(Path(ws.result).read_text())
    seal.check_result(ws, Result.from_json(result))
    with pytest.raises(PatchgateError, match="but its steps verified"):
        seal.check_result(ws, Result.from_json({**result, "tree": pg_git.EMPTY_TREE}))


# --- 8. patchgate's own files are protected --------------------------------------------------

JAIL_NONE = script(
    ["patchgate.yaml"],
    'Path("patchgate.yaml").write_text(Path("patchgate.yaml").read_text() + "jail: none\\n")',
)


@pytest.fixture
def own_project(tmp_path: Path) -> Project:
    """live_repo: "." with patchgate.yaml committed, as the default layout has it."""
    path = make_repo(
        tmp_path / "project", {**CALC, ".gitignore": (ROOT / ".gitignore").read_text()}
    )
    (path / "patches").mkdir(exist_ok=True)
    project = Project(path, path)
    project.configure(live_repo=".", gates=[], remote=None)
    git(path, "add", "patchgate.yaml")
    git(path, "commit", "-q", "-m", "patchgate config")
    return project


def test_a_patch_changing_patchgate_yaml_is_refused_at_scope(own_project: Project) -> None:
    patch = own_project.patch("loosen.py", JAIL_NONE)
    res = own_project.run("verify", f"patch={patch}")
    assert res.code != 0 and res.summary["STAGE"] == "SCOPE", res.out
    assert "patchgate's own files: patchgate.yaml" in res.summary["REASON"]
    assert "allow_protected=1" in res.summary["REASON"]


def test_allow_protected_is_needed_again_for_the_promotion(own_project: Project) -> None:
    patch = own_project.patch("loosen.py", JAIL_NONE)
    assert own_project.run("verify", f"patch={patch}", "allow_protected=1").code == 0
    before = head(own_project.live), (own_project.path / "patchgate.yaml").read_text()

    refused = own_project.run("promote", "issue=loosen")
    assert refused.code != 0 and refused.summary["STAGE"] == "SCOPE", refused.out
    assert (head(own_project.live), (own_project.path / "patchgate.yaml").read_text()) == before

    res = own_project.run("promote", "issue=loosen", "allow_protected=1")
    assert res.code == 0, res.out
    assert res.summary["PROTECTED"] == "patchgate.yaml (patchgate's own; allow_protected=1)"
    assert "jail: none" in (own_project.path / "patchgate.yaml").read_text()


def test_allow_protected_in_patchgate_yaml_is_not_a_key(own_project: Project) -> None:
    own_project.configure(allow_protected=True)
    res = own_project.run("verify", f"patch={own_project.patch('loosen.py', JAIL_NONE)}")
    assert res.code != 0 and res.summary["STAGE"] in ("CONFIG", "PREFLIGHT"), res.out


# --- 9. a huge file is refused before it reaches live's object database ----------------------


def test_a_file_over_the_size_cap_is_refused_before_git_stores_it(
    make_project: ProjectFactory,
) -> None:
    project = make_project()
    objects = project.live / ".git" / "objects"

    def stored() -> int:
        return sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())

    before = stored()
    size = pg_git.MAX_FILE_BYTES + (1 << 20)
    patch = project.patch(
        "huge.py",
        script(
            ["blob.bin"],
            f'with open("blob.bin", "wb") as fh:\n'
            f"    for _ in range({size >> 20}):\n"
            f"        fh.write(__import__('os').urandom(1 << 20))",
        ),
    )
    res = project.run("verify", f"patch={patch}")
    assert res.code != 0 and res.summary["STAGE"] == "SCOPE", res.out
    assert (
        f"blob.bin is 101 MiB, over the {pg_git.MAX_FILE_BYTES >> 20} MiB" in res.summary["REASON"]
    )
    assert stored() - before < 1 << 20


# --- 10. the fallback recorder follows doit record's rules -----------------------------------


def fallback(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        (sys.executable, "-m", "patchgate.provenance", "record", *args),
        cwd=project.path, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ("event=apply", "patch_id=p0@abc", "commit_hash=" + "a" * 40, "files=calc/ops.py"),
        ("event=verify_pass", "patch_id=p0@abc"),
        ("event=rollback", "patch_id=p0@abc"),
        (
            "event=rollback_proposed",
            "sha=" + "a" * 40,
            "token=abc",
            "source=ci",
            "confirm=doit rollback sha=a confirm=abc",
            "failure_context=forged",
        ),
        ("event=emergency_rollback", "last_good=" + "b" * 40, "reason=r", "operator=o"),
        ("event=emergency_rollback", "last_good=HEAD"),
    ],
    ids=[
        "apply",
        "verify_pass",
        "rollback",
        "rollback_proposed",
        "emergency-unknown-commit",
        "emergency-no-reason",
    ],
)
def test_the_fallback_recorder_refuses_what_doit_record_refuses(
    project: Project, args: tuple[str, ...]
) -> None:
    log = project.path / provenance.LOG_PATH
    done = fallback(project, *args)
    assert done.returncode != 0, done.stdout
    assert "STAGE: " in done.stderr and "Traceback" not in done.stderr
    assert not log.exists() or log.read_text() == ""


def test_the_fallback_recorder_writes_a_checked_emergency_rollback(project: Project) -> None:
    done = fallback(
        project, "event=emergency_rollback", "last_good=HEAD", "reason=broken", "operator=op"
    )
    assert done.returncode == 0, done.stderr
    (event,) = provenance.read_events(str(project.path))
    assert event["last_good_commit"] == head(project.live)


def test_a_file_name_that_is_not_utf8_is_refused_not_mangled(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(repo))
    blob = subprocess.run(
        ("git", "-C", str(repo), "hash-object", "-w", "--stdin"),
        input=b"x\n", capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    tree = subprocess.run(
        ("git", "-C", str(repo), "mktree", "-z"),
        input=f"100644 blob {blob}\t".encode() + b"caf\xe9.py\0",
        capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    with pytest.raises(PatchgateError, match="is not UTF-8"):
        pg_git.diff_trees(str(repo), pg_git.EMPTY_TREE, tree)

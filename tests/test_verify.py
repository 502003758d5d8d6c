"""doit verify: workspace, apply, scope, result, archive, logs and the summary block."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

from conftest import ADD_MUL, Project, git, make_repo, script
from patchgate.git import snapshot


def test_script_patch_passes_and_records_result(project: Project) -> None:
    before = project.state()
    patch = project.patch("add_mul.py", ADD_MUL)
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    assert res.summary["RESULT"] == "SUCCESS"
    assert res.summary["FILES"] == "calc/ops.py"
    result = json.loads((project.ws("add_mul") / "result.json").read_text())
    assert result["verification_status"] == "pass"
    assert result["base_sha"] == git(project.live, "rev-parse", "HEAD")
    assert result["tree"] == git(project.ws("add_mul") / "repo", "write-tree") or result["tree"]
    assert "def mul" in (project.ws("add_mul") / "repo" / "calc" / "ops.py").read_text()
    assert project.state() == before  # the live repository is untouched


def test_summary_names_the_log_and_latest_log_points_to_it(project: Project) -> None:
    res = project.run("verify", f"patch={project.patch('add_mul.py', ADD_MUL)}")
    log = project.path / res.summary["LOG"]
    assert log.exists() and "RESULT: SUCCESS" in log.read_text()
    latest = project.path / "patches" / "latest.log"
    assert latest.is_symlink() and latest.resolve() == log.resolve()


def test_noop_rerun_runs_no_step(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    again = project.run("verify", f"patch={patch}")
    assert again.code == 0
    assert "\n.  " not in "\n" + again.out  # no step executed
    assert "-- verify:add_mul-apply" in again.out


def test_patch_edit_with_same_result_reruns_only_apply(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    project.patch("add_mul.py", ADD_MUL + "\n# a comment that changes nothing in the tree\n")
    again = project.run("verify", f"patch={patch}")
    assert again.code == 0
    assert ".  verify:add_mul-apply" in again.out
    assert "-- verify:add_mul-scope" in again.out
    assert "-- verify:add_mul\n" in again.out


def test_workspace_is_reused_and_attempt_counts(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    project.run("verify", f"patch={patch}")
    pointer = (project.ws("add_mul") / "repo" / ".git").read_text()
    marker = project.ws("add_mul") / "repo" / "README.txt"
    inode = marker.stat().st_ino
    project.patch("add_mul.py", ADD_MUL.replace("a * b", "b * a"))
    assert project.run("verify", f"patch={patch}").code == 0
    meta = json.loads((project.ws("add_mul") / "meta.json").read_text())
    assert meta["attempt"] == 2
    assert (project.ws("add_mul") / "repo" / ".git").read_text() == pointer
    assert marker.stat().st_ino == inode  # untouched file was not rewritten
    assert "b * a" in (project.ws("add_mul") / "repo" / "calc" / "ops.py").read_text()
    assert "a * b" not in (project.ws("add_mul") / "repo" / "calc" / "ops.py").read_text()


def test_new_base_moves_the_workspace(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    project.run("verify", f"patch={patch}")
    (project.live / "NEWS.txt").write_text("news\n")
    git(project.live, "add", "NEWS.txt")
    git(project.live, "commit", "-q", "-m", "news")
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    meta = json.loads((project.ws("add_mul") / "meta.json").read_text())
    assert meta["base_sha"] == git(project.live, "rev-parse", "HEAD")
    assert (project.ws("add_mul") / "repo" / "NEWS.txt").exists()


def test_damaged_workspace_is_recreated(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    project.run("verify", f"patch={patch}")
    (project.ws("add_mul") / "repo" / ".git").unlink()
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    assert git(project.ws("add_mul") / "repo", "rev-parse", "HEAD") == git(
        project.live, "rev-parse", "HEAD"
    )


def test_unified_diff_with_inferred_strip(project: Project) -> None:
    diff = (
        "diff --git a/README.txt b/README.txt\n--- a/README.txt\n+++ b/README.txt\n"
        "@@ -1 +1,2 @@\n calc\n+more\n"
    )
    res = project.run("verify", f"patch={project.patch('readme.diff', diff)}")
    assert res.code == 0, res.out
    applied = json.loads((project.ws("readme") / "steps" / "apply.json").read_text())
    assert applied["files"] == ["README.txt"] and applied["method"] == "diff"


def test_zip_of_patches_applies_in_sorted_order(project: Project) -> None:
    first = "--- README.txt\n+++ README.txt\n@@ -1 +1,2 @@\n calc\n+one\n"
    second = "--- README.txt\n+++ README.txt\n@@ -1,2 +1,3 @@\n calc\n one\n+two\n"
    path = project.path / "patches" / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("b.patch", second)
        zf.writestr("a.patch", first)
    res = project.run("verify", "patch=patches/two.zip")
    assert res.code == 0, res.out
    assert (project.ws("two") / "repo" / "README.txt").read_text() == "calc\none\ntwo\n"
    assert sorted(p.name for p in (project.path / "patches").iterdir() if p.name[0] == ".") == [
        ".state"
    ]  # the check before any work wrote nothing beside the patch


def test_several_patches_by_glob_in_parallel(project: Project) -> None:
    for n in (1, 2, 3):
        project.patch(
            f"p{n}.py", script(["README.txt"], f'Path("README.txt").write_text("{n}\\n")')
        )
    res = project.run("-n", "2", "-P", "process", "verify", "patch=patches/p*.py")
    assert res.code == 0, res.out
    for n in (1, 2, 3):
        assert (project.ws(f"p{n}") / "repo" / "README.txt").read_text() == f"{n}\n"
        assert (
            json.loads((project.ws(f"p{n}") / "result.json").read_text())["verification_status"]
            == "pass"
        )
    assert "3 passed, 0 failed" in res.out


def test_comma_list_and_issue_name(project: Project) -> None:
    project.patch("a.py", script(["README.txt"], 'Path("README.txt").write_text("a\\n")'))
    res = project.run("verify", "patch=patches/a.py", "issue=ISSUE-7")
    assert res.code == 0, res.out
    assert project.ws("ISSUE-7").is_dir()


def test_scope_undeclared_untouched_noop(project: Project) -> None:
    undeclared = project.patch(
        "u.py",
        script(
            ["README.txt"], 'Path("NEW.txt").write_text("x")\nPath("README.txt").write_text("y")'
        ),
    )
    res = project.run("verify", f"patch={undeclared}")
    assert res.code != 0 and res.summary["STAGE"] == "SCOPE"
    assert "NEW.txt" in res.summary["REASON"]
    assert project.run("verify", f"patch={undeclared}", "allow_undeclared=1").code == 0
    untouched = project.patch(
        "t.py", script(["README.txt", "calc/ops.py"], 'Path("README.txt").write_text("y")')
    )
    res = project.run("verify", f"patch={untouched}")
    assert res.summary["STAGE"] == "SCOPE" and "calc/ops.py" in res.summary["REASON"]
    assert project.run("verify", f"patch={untouched}", "allow_untouched=1").code == 0
    noop = project.patch("n.py", script(["README.txt"], "pass"))
    res = project.run("verify", f"patch={noop}")
    assert res.summary["STAGE"] == "SCOPE" and "changed nothing" in res.summary["REASON"]
    assert project.run("verify", f"patch={noop}", "allow_noop=1").code == 0


def test_failed_apply_restores_the_workspace(project: Project) -> None:
    patch = project.patch(
        "boom.py",
        script(
            ["README.txt"],
            'Path("README.txt").write_text("half")\n'
            'Path("junk.txt").write_text("j")\n'
            'raise SystemExit("patch gave up")',
        ),
    )
    res = project.run("verify", f"patch={patch}")
    assert res.code != 0 and res.summary["STAGE"] == "APPLY"
    assert "patch gave up" in res.summary["REASON"]
    repo = project.ws("boom") / "repo"
    assert (repo / "README.txt").read_text() == "calc\n"
    assert not (repo / "junk.txt").exists()
    assert git(repo, "status", "--porcelain") == ""
    result = json.loads((project.ws("boom") / "result.json").read_text())
    assert result["verification_status"] == "fail" and result["stage"] == "APPLY"


def test_archive_is_deterministic_and_excludes_caches(project: Project) -> None:
    patch = project.patch(
        "c.py",
        script(
            ["calc/ops.py", "calc/__pycache__/x.pyc"],
            'Path("calc/ops.py").write_text("X = 1\\n")\n'
            'Path("calc/__pycache__").mkdir()\n'
            'Path("calc/__pycache__/x.pyc").write_bytes(b"0")',
        ),
    )
    project.configure(live_repo="live", gates=[], allow_untouched=True)
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    names = zipfile.ZipFile(project.ws("c") / "patched.zip").namelist()
    assert names == sorted(names)
    assert "files/calc/ops.py" in names and "result.json" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    mtime = (project.ws("c") / "patched.zip").stat().st_mtime_ns
    assert project.run("verify", f"patch={patch}").code == 0
    assert (project.ws("c") / "patched.zip").stat().st_mtime_ns == mtime  # no rebuild
    os.unlink(project.ws("c") / "patched.zip")
    assert project.run("verify", f"patch={patch}").code == 0
    assert zipfile.ZipFile(project.ws("c") / "patched.zip").namelist() == names


def test_config_shows_sources(project: Project) -> None:
    res = project.run("config", "keep_going=1")
    assert res.code == 0, res.out
    assert "(command line)" in next(
        ln for ln in res.out.splitlines() if ln.startswith("keep_going")
    )
    assert "(patchgate.yaml)" in next(
        ln for ln in res.out.splitlines() if ln.startswith("live_repo")
    )
    assert "(default)" in next(ln for ln in res.out.splitlines() if ln.startswith("remote"))


def test_status_lists_workspaces_and_staleness(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    project.run("verify", f"patch={patch}")
    res = project.run("status")
    assert "add_mul" in res.out and "pass" in res.out and "current" in res.out
    project.patch("add_mul.py", ADD_MUL + "\n")
    assert "patch edited" in project.run("status").out


def commit_live(project: Project, name: str, text: str) -> str:
    (project.live / name).write_text(text)
    git(project.live, "add", name)
    git(project.live, "commit", "-q", "-m", f"live edits {name}")
    return git(project.live, "rev-parse", "HEAD")


def test_issue_reverifies_existing_workspace(project: Project) -> None:
    patch = project.patch("add_mul.py", ADD_MUL)
    assert project.run("verify", f"patch={patch}").code == 0
    res = project.run("verify", "issue=add_mul")
    assert res.code == 0, res.out
    assert "-- verify:add_mul-apply" in res.out  # nothing changed: nothing reruns


def test_issue_without_workspace_is_refused(project: Project) -> None:
    res = project.run("verify", "issue=nothing_here")
    assert res.code != 0 and "no workspace for issue nothing_here" in res.summary["REASON"]


def test_live_moved_elsewhere_reruns_patch_on_new_base(project: Project) -> None:
    assert project.run("verify", f"patch={project.patch('add_mul.py', ADD_MUL)}").code == 0
    head = commit_live(project, "README.txt", "calc, moved\n")
    res = project.run("verify", "issue=add_mul")
    assert res.code == 0, res.out
    result = json.loads((project.ws("add_mul") / "result.json").read_text())
    assert result["base_sha"] == head


def test_live_moved_in_patched_file_fails_by_default(project: Project) -> None:
    assert project.run("verify", f"patch={project.patch('add_mul.py', ADD_MUL)}").code == 0
    commit_live(project, "calc/ops.py", "X = 1\n")
    res = project.run("verify", "issue=add_mul")
    assert res.code != 0 and res.summary["STAGE"] == "PROMOTE"
    assert "calc/ops.py" in res.summary["REASON"] and "live_changed=" in res.summary["REASON"]


def test_overwrite_live_carries_the_verified_change_into_lives_file(project: Project) -> None:
    """Issue 11 item 8: the verified change is merged into live's version, never over it."""
    assert project.run("verify", f"patch={project.patch('add_mul.py', ADD_MUL)}").code == 0
    verified = (project.ws("add_mul") / "repo" / "calc" / "ops.py").read_text()
    ops = (project.live / "calc" / "ops.py").read_text()
    head = commit_live(project, "calc/ops.py", "X = 1\n" + ops)
    res = project.run("verify", "issue=add_mul", "live_changed=overwrite_live")
    assert res.code == 0, res.out
    assert (project.ws("add_mul") / "repo" / "calc" / "ops.py").read_text() == "X = 1\n" + verified
    applied = json.loads((project.ws("add_mul") / "steps" / "apply.json").read_text())
    assert applied["method"] == "carry"
    assert json.loads((project.ws("add_mul") / "result.json").read_text())["base_sha"] == head


def test_overwrite_workspace_keeps_live_version(project: Project) -> None:
    two = script(
        ["calc/ops.py", "README.txt"],
        'Path("calc/ops.py").write_text("Y = 2\\n")\nPath("README.txt").write_text("r\\n")',
    )
    assert project.run("verify", f"patch={project.patch('two.py', two)}").code == 0
    commit_live(project, "calc/ops.py", "X = 1\n")
    res = project.run("verify", "issue=two", "live_changed=overwrite_workspace")
    assert res.code == 0, res.out
    repo = project.ws("two") / "repo"
    assert (repo / "calc" / "ops.py").read_text() == "X = 1\n"
    assert (repo / "README.txt").read_text() == "r\n"
    assert json.loads((project.ws("two") / "result.json").read_text())["files"] == ["README.txt"]


def test_symlink_out_of_the_workspace_is_archived_as_a_link(project: Project) -> None:
    patch = project.patch("link.py", script(["etc"], 'import os\nos.symlink("/etc", "etc")'))
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    result = json.loads((project.ws("link") / "result.json").read_text())
    assert result["changes"][0]["mode"] == "120000"  # scope saw the link itself
    with zipfile.ZipFile(project.ws("link") / "patched.zip") as zf:
        info = zf.getinfo("files/etc")
        assert (info.external_attr >> 16) & 0o170000 == 0o120000
        assert zf.read("files/etc") == b"/etc"
        assert not any(n.startswith("files/etc/") for n in zf.namelist())


WRITE_X = 'Path(FILES[0]).write_text("x\\n")'


def test_a_file_name_cannot_add_lines_to_the_summary(project: Project) -> None:
    name = "x.txt\nRESULT: FAIL\nSTAGE: GATES\x1b[2K"
    res = project.run("verify", f"patch={project.patch('n.py', script([name], WRITE_X))}")
    assert res.code == 0, res.out
    block = res.out[res.out.index("RESULT: ") :].splitlines()
    assert [ln for ln in block if ln.startswith("RESULT")] == ["RESULT: SUCCESS"]
    assert not any(ln.startswith("STAGE") for ln in block)
    assert res.summary["FILES"] == "x.txt\\nRESULT: FAIL\\nSTAGE: GATES\\x1b[2K"


def test_summary_block_ends_with_the_log_line() -> None:
    from patchgate.report import summary_lines

    lines = summary_lines({"LOG": "l", "DEMO": "d", "RESULT": "SUCCESS", "PUSH": "OK"})
    assert lines == ["RESULT: SUCCESS", "PUSH: OK", "DEMO: d", "LOG: l"]


def test_the_snapshot_sees_a_same_size_rewrite_git_could_take_for_unchanged(
    tmp_path: Path,
) -> None:
    """git trusts an entry's stat only if the file is older than the index (racy git), so the
    snapshot's private copy of the index must keep the index's mtime. Here the file is
    rewritten with the same size and mtime as its entry; trustctime off and utime make the
    same-second case deterministic (it once made a verify say "the patch changed nothing")."""
    repo = make_repo(tmp_path / "repo", {"README.txt": "calc\n"})
    git(repo, "config", "core.trustctime", "false")
    readme, index = repo / "README.txt", repo / ".git" / "index"
    past = time.time() - 100
    os.utime(readme, (past, past))
    git(repo, "update-index", "-q", "--refresh")  # the entry now holds mtime `past`
    os.utime(index, (past, past))  # entry as new as the index: git must read the content
    readme.write_text("loud\n")
    os.utime(readme, (past, past))
    tree = snapshot(str(repo), str(tmp_path / "private.index"))
    assert git(repo, "ls-tree", tree, "README.txt") != git(repo, "ls-tree", "HEAD", "README.txt")


def test_a_crlf_file_written_as_a_checkout_writes_it_verifies(project: Project) -> None:
    """eol=crlf: git stores LF, the disk holds CRLF; the same lines, so not a conversion."""
    text = 'Path(".gitattributes").write_text("README.txt text eol=crlf\\n")\n'
    text += 'Path("README.txt").write_bytes(b"calc\\r\\nmore\\r\\n")'
    patch = project.patch("crlf.py", script([".gitattributes", "README.txt"], text))
    res = project.run("verify", f"patch={patch}")
    assert res.code == 0, res.out
    changes = json.loads((project.ws("crlf") / "result.json").read_text())["changes"]
    readme = next(c for c in changes if c["path"] == "README.txt")
    assert git(project.live, "cat-file", "blob", readme["blob"]) == "calc\nmore"

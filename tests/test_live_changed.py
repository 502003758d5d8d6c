"""live_changed (issue 11, item 8): live moved since the base; nothing that landed is undone."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ADD_MUL, ROOT, Project, ProjectFactory, git, make_repo, script
from patchgate import config, live_changed
from patchgate import git as pgit
from patchgate.errors import PatchgateError
from patchgate.workspace import Meta, Result


def based_on(sha: str, tree: str) -> Meta:
    """The meta.json of a workspace verified on ``sha`` (what live_changed.plan reads of it)."""
    return Meta("i", "/live", sha, tree, 1, "patches/p.py", "0" * 64, "2026-01-01T00:00:00")


def verified_into(files: list[str], tree: str | None) -> Result:
    """A result.json that verified ``files`` into ``tree``."""
    return Result("i@0", "i", "0" * 40, "0" * 64, "not_run", [], {}, "pass", tree, files, {})


HEADER = "# live's header\n"
# A script that writes the whole file as it was when the patch was written: re-run on a base
# where live changed that file, it would silently undo live's commit.
WHOLE_FILE = script(
    ["calc/ops.py"],
    'Path("calc/ops.py").write_text(\'"""Arithmetic."""\\n\\n\\ndef add(a: int, b: int) -> int:'
    "\\n    return a + b\\n\\n\\ndef sub(a: int, b: int) -> int:\\n    return a - b\\n\\n\\n"
    "def mul(a: int, b: int) -> int:\\n    return a * b\\n')",
)


def commit_in(repo: Path, name: str, text: str, message: str = "live work") -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "-c", "user.name=O", "-c", "user.email=o@x.invalid", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def verified(project: Project, issue: str, text: str) -> None:
    res = project.run("verify", f"patch={project.patch(f'{issue}.py', text)}")
    assert res.code == 0, res.out


def test_overwrite_live_merges_the_verified_change_into_lives_version(
    project: Project,
) -> None:
    verified(project, "add_mul", ADD_MUL)
    ops = project.live / "calc/ops.py"
    commit_in(project.live, "calc/ops.py", HEADER + ops.read_text(), "add a header")
    res = project.run("promote", "issue=add_mul", "live_changed=overwrite_live")
    assert res.code == 0, res.out
    text = ops.read_text()
    assert text.startswith(HEADER) and "def mul" in text  # live's commit kept, patch landed
    assert "live_changed=overwrite_live: live changed calc/ops.py" in res.summary["NOTE"]
    assert "add a header" in res.summary["NOTE"]
    assert "merged into live's version" in res.summary["NOTE"]


def test_rebase_that_would_undo_a_landed_commit_is_refused(project: Project) -> None:
    verified(project, "whole", WHOLE_FILE)
    ops = project.live / "calc/ops.py"
    commit_in(project.live, "calc/ops.py", HEADER + ops.read_text(), "add a header")
    before = project.state()
    res = project.run("verify", "issue=whole", "live_changed=rebase")
    assert res.code != 0
    assert res.summary["STAGE"] == "APPLY"
    reason = res.summary["REASON"]
    assert "live_changed=rebase: on the new base the patch reverts what landed" in reason
    assert "calc/ops.py" in reason and "add a header" in reason
    assert "docs/live-changed.md" in reason
    assert project.state() == before


def test_rebase_says_what_it_did(project: Project) -> None:
    verified(project, "add_mul", ADD_MUL)
    ops = project.live / "calc/ops.py"
    commit_in(project.live, "calc/ops.py", HEADER + ops.read_text(), "add a header")
    res = project.run("verify", "issue=add_mul", "live_changed=rebase")
    assert res.code == 0, res.out
    assert (
        "the patch was re-run on the new base and verified again (rebase)" in (res.summary["NOTE"])
    )
    log = (project.path / "patches" / "latest.log").read_text()
    assert "apply: live_changed=rebase: live changed calc/ops.py" in log


# --- the three-way check, on real blobs ---------------------------------------------------------


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, tuple[str, str]]]:
    repo = make_repo(tmp_path_factory.mktemp("blobs") / "r", {"seed": "x\n"})
    texts = {
        "base": "a\nb\nc\nd\ne\nf\ng\n",
        "live": "A\nb\nc\nd\ne\nf\ng\n",  # live changed line 1
        "kept": "A\nb\nc\nd\ne\nf\nG\n",  # the patch changed line 7, live's line 1 is there
        "reverted": "a\nb\nc\nd\ne\nf\nG\n",  # the patch's line 7, live's line 1 undone
        "same_lines": "Z\nb\nc\nd\ne\nf\ng\n",  # the patch rewrote live's line
    }
    ids = {}
    for name, text in texts.items():
        blob = pgit.out(str(repo), "hash-object", "-w", "--stdin", input_bytes=text.encode())
        ids[name] = ("100644", blob)
    return str(repo), ids


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ("kept", None),
        ("reverted", "reverts what landed on live"),
        ("same_lines", "changes the same lines as what landed on live"),
        (None, "deletes a file live changed"),
    ],
)
def test_undoes_tells_a_kept_change_from_an_undone_one(
    blobs: tuple[str, dict[str, tuple[str, str]]], result: str | None, why: str | None
) -> None:
    repo, ids = blobs
    found = ids[result] if result else None
    assert live_changed._undoes(repo, ids["base"], ids["live"], found) == why


def test_undoes_a_file_live_deleted(blobs: tuple[str, dict[str, tuple[str, str]]]) -> None:
    repo, ids = blobs
    assert live_changed._undoes(repo, ids["base"], None, ids["kept"]) == (
        "brings back a file live deleted"
    )


def test_fail_refuses_naming_the_files_commits_and_the_doc(project: Project) -> None:
    live = str(project.live)
    old = git(project.live, "rev-parse", "HEAD")
    meta = based_on(old, git(project.live, "rev-parse", "HEAD^{tree}"))
    new = commit_in(project.live, "calc/ops.py", "x = 1\n", "rewrite ops")
    with pytest.raises(PatchgateError) as err:
        live_changed.plan(live, meta, new, verified_into(["calc/ops.py"], old), "fail")
    assert "calc/ops.py (" in err.value.message and "rewrite ops" in err.value.message
    assert live_changed.DOC in err.value.message
    assert "overwrite_live" in err.value.message


def test_every_policy_is_documented_where_the_message_points() -> None:
    doc = (ROOT / live_changed.DOC).read_text()
    for policy in config.CHOICE_KEYS["live_changed"]:
        assert f"`{policy}`" in doc, policy


def test_moved_elsewhere_is_a_rebase_for_every_policy(make_project: ProjectFactory) -> None:
    project = make_project()
    live = str(project.live)
    old = git(project.live, "rev-parse", "HEAD")
    meta = based_on(old, git(project.live, "rev-parse", "HEAD^{tree}"))
    new = commit_in(project.live, "README.txt", "news\n")
    for policy in config.CHOICE_KEYS["live_changed"]:
        plan = live_changed.plan(live, meta, new, verified_into(["calc/ops.py"], old), policy)
        assert plan["mode"] == "rebase" and plan["clash"] == []
        assert "not in the patch's files" in live_changed.note(plan)

"""git.snapshot stages what changed by name (no second walk of the worktree): the tree it
writes is the one ``git add -A -- .`` gives, whatever the patch did to the worktree."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from patchgate import git
from patchgate.errors import PatchgateError

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t.invalid",
}


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=ENV, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    (path / "a").mkdir(parents=True)
    (path / "a" / "b.py").write_text("x = 1\n")
    (path / "c.py").write_text("y = 2\n")
    (path / ".gitignore").write_text("*.log\n__pycache__/\n")
    sh(tmp_path, "init", "-q", str(path))
    sh(path, "add", "-A")
    sh(path, "commit", "-q", "-m", "base")
    return path


def full_walk_tree(repo: Path, index: Path) -> str:
    """What snapshot wrote before: the worktree's index copied, `add -A -- .`, write-tree."""
    shutil.copy2(repo / ".git" / "index", index)
    env = {**ENV, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "-C", str(repo), "add", "-A", "--", "."], env=env, check=True)
    return subprocess.run(
        ["git", "-C", str(repo), "write-tree"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def symlinked_folder(repo: Path) -> None:
    shutil.rmtree(repo / "a")
    elsewhere = repo.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.py").write_text("x = 1\n")
    (repo / "a").symlink_to(elsewhere)


def file_to_folder(repo: Path) -> None:
    (repo / "c.py").unlink()
    (repo / "c.py").mkdir()
    (repo / "c.py" / "d.py").write_text("z = 3\n")


def folder_to_file(repo: Path) -> None:
    shutil.rmtree(repo / "a")
    (repo / "a").write_text("now a file\n")


def nested_with_commit(repo: Path) -> None:
    sub = repo / "sub"
    sh(repo, "init", "-q", str(sub))
    (sub / "f").write_text("f\n")
    sh(sub, "add", "f")
    sh(sub, "commit", "-q", "-m", "sub")


CASES: dict[str, Callable[[Path], object]] = {
    "nothing": lambda r: None,
    "edit": lambda r: (r / "c.py").write_text("y = 3\n"),
    "new and ignored files": lambda r: (
        (r / "n.py").write_text("n = 1\n"),
        (r / "x.log").write_text("log\n"),
        (r / "a" / "__pycache__").mkdir(),
        (r / "a" / "__pycache__" / "b.pyc").write_bytes(b"\0"),
    ),
    "deletion": lambda r: (r / "c.py").unlink(),
    "mode change": lambda r: (r / "c.py").chmod(0o755),
    "names that look like globs": lambda r: (
        (r / "*.py").write_text("g\n"),
        (r / "[a].py").write_text("g\n"),
        (r / ":(glob)x").write_text("g\n"),
    ),
    "a file turned into a folder": file_to_folder,
    "a folder turned into a file": folder_to_file,
    "a folder turned into a symlink": symlinked_folder,
    "a nested repository with a commit": nested_with_commit,
}


@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_writes_the_tree_a_full_add_writes(
    repo: Path, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    CASES[case](repo)
    expected = full_walk_tree(repo, tmp_path / "expected.index")
    calls: list[tuple[str, ...]] = []
    real_run = git.run

    def spy(path: str, *args: str, **kw: object) -> object:
        calls.append(args)
        return real_run(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(git, "run", spy)
    assert git.snapshot(str(repo), str(tmp_path / "snapshot.index")) == expected
    if case != "a folder turned into a symlink":  # git refuses the path behind it: full walk
        assert ("add", "-A", "--", ".") not in calls, calls  # no second walk of the worktree
    # The next snapshot of the same worktree reuses the index and writes the same tree.
    calls.clear()
    assert git.snapshot(str(repo), str(tmp_path / "snapshot.index")) == expected
    assert not any(c[:1] == ("rev-parse",) for c in calls), calls


def test_many_changes_are_staged_by_one_walk(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git, "ADD_BY_NAME", 2)
    for n in range(3):
        (repo / f"new{n}.py").write_text(f"n = {n}\n")
    expected = full_walk_tree(repo, tmp_path / "expected.index")
    assert git.snapshot(str(repo), str(tmp_path / "snapshot.index")) == expected


def test_an_empty_nested_repository_is_still_refused_in_words(repo: Path, tmp_path: Path) -> None:
    sh(repo, "init", "-q", str(repo / "sub"))
    with pytest.raises(PatchgateError) as err:
        git.snapshot(str(repo), str(tmp_path / "snapshot.index"))
    assert err.value.stage == "SCOPE"
    assert "sub is a git repository inside the workspace" in err.value.message

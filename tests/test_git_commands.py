"""The named git commands of git.py that the live guard, the rollback plan, propose, the
workspace, the gates and the audit use, on real repositories, in process (a fraction of a
second each)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import git, make_repo
from patchgate import git as pgit
from patchgate import liveguard, lock
from patchgate.errors import PatchgateError


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_reflog_moves_and_changed_paths(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n", "b.py": "b\n"})
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"a.py": "A\n", "sub/c.py": "c\n"}, "patchgate promote: x")
    moves = pgit.head_moves(str(repo), 10)
    assert moves is not None and moves[0] == (second, "commit: patchgate promote: x")
    assert moves[-1][0] == first
    assert pgit.head_moves(str(repo), 1) == moves[:1]
    assert pgit.changed_paths(str(repo), first, second) == {"a.py", "sub/c.py"}
    assert pgit.changed_paths(str(repo), second, second) == set()
    assert pgit.head_moves(str(tmp_path), 10) is None  # not a repository


def test_landings_between_explains_patchgate_landings_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n"})
    first = git(repo, "rev-parse", "HEAD")
    landed = commit(repo, {"a.py": "A\n"}, "x")
    git(repo, "reset", "-q", "--soft", first)
    git(repo, "update-ref", "-m", "patchgate promote: issue 1", "HEAD", landed)
    assert liveguard.landings_between(str(repo), first, landed) == {"a.py"}
    other = commit(repo, {"b.py": "b\n"}, "by hand")
    assert liveguard.landings_between(str(repo), first, other) is None


def test_on_remote_branch_knows_fetched_from_local(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"a.py": "a\n"})
    fetched = git(origin, "rev-parse", "HEAD")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "config", "user.name", "T")
    git(clone, "config", "user.email", "t@t.invalid")
    local = commit(clone, {"b.py": "b\n"}, "local")
    assert pgit.on_remote_branch(str(clone), fetched)
    assert not pgit.on_remote_branch(str(clone), local)
    assert liveguard.from_remote(str(clone), fetched)


def test_tracked_paths_show_file_and_short_log(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n", "d/b.py": "b\n"})
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"a.py": "A\n"}, "edit a")
    commit(repo, {"d/b.py": "B\n"}, "edit b")
    assert pgit.tracked_paths(str(repo), first) == {"a.py", "d/b.py"}
    assert pgit.show_file(str(repo), first, "a.py") == "a\n"
    assert pgit.show_file(str(repo), second, "a.py") == "A\n"
    lines = pgit.short_log(str(repo), f"{first}..HEAD", ["a.py"], 5)
    assert [ln.split(" ", 1)[1] for ln in lines] == ["edit a"]
    assert len(pgit.short_log(str(repo), f"{first}..HEAD", ["a.py", "d/b.py"], 1)) == 1


def test_index_lock_of_a_live_that_is_a_worktree(tmp_path: Path) -> None:
    main = make_repo(tmp_path / "main", {"a.py": "a\n"})
    assert lock.index_lock_of(str(main)) is None
    (main / ".git" / "index.lock").write_text("")
    assert lock.index_lock_of(str(main)) == str(main / ".git" / "index.lock")
    tree = tmp_path / "tree"
    git(main, "worktree", "add", "-q", "--detach", str(tree))
    assert lock.index_lock_of(str(tree)) is None
    where = pgit.git_path(str(tree), "index.lock")
    assert where is not None and "worktrees" in where
    held = Path(where) if Path(where).is_absolute() else tree / where
    held.write_text("")
    found = lock.index_lock_of(str(tree))
    assert found is not None and Path(found).resolve() == held.resolve()
    assert pgit.git_path(str(tmp_path), "index.lock") is None


def test_first_parent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n"})
    root = git(repo, "rev-parse", "HEAD")
    child = commit(repo, {"a.py": "A\n"}, "edit")
    assert pgit.first_parent(str(repo), child) == root
    assert pgit.first_parent(str(repo), root) is None


def test_a_commit_travels_by_bundle_to_a_shared_checkout(tmp_path: Path) -> None:
    live = make_repo(tmp_path / "live", {"a.py": "a\n"})
    base = git(live, "rev-parse", "HEAD")
    commit(live, {"a.py": "later\n"}, "later")
    shadow, bundle = tmp_path / "shadow", str(tmp_path / "base.bundle")
    shadow.mkdir()
    pgit.bundle_commit(str(live), str(shadow), base, "refs/patchgate/base", bundle, "WORKER")
    assert git(live, "for-each-ref").count("refs/patchgate") == 0  # live gets no ref
    mirror = tmp_path / "mirror.git"
    mirror.mkdir()
    pgit.mirror_bundle(str(mirror), bundle, "+refs/patchgate/*:refs/patchgate/*", base, "WORKER")
    repo = tmp_path / "work" / "repo"
    repo.parent.mkdir()
    pgit.shared_checkout(str(repo.parent), str(mirror), str(repo), base, "WORKER")
    assert (repo / "a.py").read_text() == "a\n"
    assert git(repo, "rev-parse", "HEAD") == base
    assert git(repo, "config", "gc.auto") == "0"


def test_index_entries_set_and_reset(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n", "b.py": "b\n"})
    blob = pgit.hash_blob(str(repo), b"new\n", write=False)
    assert pgit.run(str(repo), "cat-file", "-e", blob, check=False).returncode != 0
    assert pgit.hash_blob(str(repo), b"new\n", write=True) == blob
    assert git(repo, "cat-file", "-p", blob) == "new"
    pgit.set_index_entries(str(repo), [f"100644 {blob}\ta.py", f"0 {'0' * 40}\tb.py"])
    staged = git(repo, "diff", "--cached", "--name-status")
    assert staged.splitlines() == ["M\ta.py", "D\tb.py"]
    pgit.reset_paths(str(repo), ["a.py", "b.py"])
    assert git(repo, "diff", "--cached", "--name-status") == ""


def test_diff_text_and_commit_summaries(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n"})
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"a.py": "A\n"}, "edit a")
    text = pgit.diff_text(str(repo), first, second)
    assert text is not None and "-a\n+A\n" in text and "\x1b[" not in text
    assert pgit.diff_text(str(repo), first, "0" * 40) is None
    rows = [r for r in pgit.commit_summaries(str(repo), [second, first]) if len(r) == 3]
    assert [(r[0], r[2]) for r in rows] == [(second, "edit a"), (first, "first")]
    assert all(r[1].isdigit() for r in rows)


def test_publish_first_commit_to_a_new_bare_remote(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote.git")
    pgit.init_bare(remote, "main")
    live = tmp_path / "live"
    live.mkdir()
    (live / "a.py").write_text("a\n")
    pgit.publish_first_commit(str(live), remote, "main", ("M", "m@x.invalid"), "one", "DEMO")
    assert git(live, "log", "--format=%an <%ae> %s") == "M <m@x.invalid> one"
    assert git(remote, "rev-parse", "main") == git(live, "rev-parse", "HEAD")
    assert git(remote, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_toplevel_and_a_workspace_worktree(tmp_path: Path) -> None:
    live = make_repo(tmp_path / "live", {"a.py": "a\n", "d/b.py": "b\n"})
    first = git(live, "rev-parse", "HEAD")
    second = commit(live, {"a.py": "A\n"}, "edit a")
    assert pgit.toplevel(str(live / "d")) == git(live, "rev-parse", "--show-toplevel")
    (tmp_path / "plain").mkdir()
    assert pgit.toplevel(str(tmp_path / "plain")) is None
    tree = tmp_path / "ws" / "repo"
    pgit.add_worktree(str(live), str(tree), first, stage="WORKSPACE")
    assert (tree / "a.py").read_text() == "a\n"
    assert git(tree, "rev-parse", "HEAD") == first
    pgit.checkout_detached(str(tree), second, stage="WORKSPACE")
    assert (tree / "a.py").read_text() == "A\n"
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
    with pytest.raises(PatchgateError) as err:
        pgit.add_worktree(str(live), str(tree), first, stage="WORKSPACE")
    assert err.value.stage == "WORKSPACE"
    assert err.value.message.startswith(f"git worktree failed in {live}: ")
    shutil.rmtree(tree)
    assert str(tree) in git(live, "worktree", "list")
    pgit.prune_worktrees(str(live), stage="WORKSPACE")
    assert str(tree) not in git(live, "worktree", "list")


def test_tree_with_entries_leaves_the_worktree_index_alone(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n", "b.py": "b\n"})
    base = pgit.tree_of(str(repo), "HEAD")
    blob = pgit.hash_blob(str(repo), b"fixed\n", write=True)
    index = str(tmp_path / "overlay.index")
    rows = [("100755", blob, "a.py"), ("100644", blob, "new/c.py")]
    tree = pgit.tree_with_entries(str(repo), index, base, rows, stage="GATES")
    listing = git(repo, "ls-tree", "-r", tree).splitlines()
    assert listing == [
        f"100755 blob {blob}\ta.py",
        f"100644 blob {git(repo, 'rev-parse', 'HEAD:b.py')}\tb.py",
        f"100644 blob {blob}\tnew/c.py",
    ]
    assert git(repo, "status", "--porcelain") == ""  # the worktree's own index is untouched
    assert pgit.tree_with_entries(str(repo), index, base, [], stage="GATES") == base
    with pytest.raises(PatchgateError) as err:
        pgit.tree_with_entries(str(repo), index, "0" * 40, rows, stage="GATES")
    assert err.value.stage == "GATES" and "git read-tree failed in" in err.value.message


def test_the_audit_history_reads(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "live", {"a.py": "a\n"})
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "side")
    second = commit(repo, {"a.py": "A\n"}, "edit a\n\nbody line\n\nIssue: 7")
    assert pgit.branch_commit(str(repo), "main") == first
    assert pgit.branch_commit(str(repo), "side") == second
    assert pgit.branch_commit(str(repo), "nope") is None
    messages = pgit.commit_messages(str(repo), [second, first], "AUDIT")
    assert messages == {second: "edit a\n\nbody line\n\nIssue: 7\n", first: "first\n"}
    tree = pgit.tree_of(str(repo), first)
    kinds = pgit.object_kinds(str(repo), [first[:12], tree, "0" * 40], "AUDIT")
    assert kinds == [(first, "commit"), (tree, "tree"), ("0" * 40, "missing")]
    times = pgit.commit_times(str(repo), [second, first], "AUDIT")
    assert times == {
        sha: int(git(repo, "log", "-1", "--format=%ct", sha)) for sha in (first, second)
    }
    with pytest.raises(PatchgateError) as err:
        pgit.commit_times(str(repo), ["0" * 40], "AUDIT")
    assert err.value.stage == "AUDIT" and err.value.message.startswith("git log failed in")

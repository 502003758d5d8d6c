"""Commit trailers: what promote and rollback write is what git reads back."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from patchgate import trailers as tr
from patchgate.errors import PatchgateError
from patchgate.trailers import commit_trailers, format_message, parse_trailers, patchgate_commits


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "live"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "gc.auto", "0")
    git(path, "config", "user.name", "Patchgate Test")
    git(path, "config", "user.email", "test@patchgate.invalid")
    return path


def commit(repo: Path, message: str) -> str:
    """Commit ``message`` as promote does: from stdin, not edited."""
    git(repo, "commit", "-q", "--allow-empty", "--cleanup=verbatim", "-F", "-", stdin=message)
    return git(repo, "rev-parse", "HEAD").strip()


PROMOTE_TRAILERS = [
    (tr.PATCH_ID, "fix_login-20251029-143022"),
    (tr.ISSUE, "fix_login"),
    (tr.BASE, "0123456789abcdef0123456789abcdef01234567"),
    (tr.TRIGGER, "doit promote issue=fix_login"),
    (tr.VERIFICATION, tr.verification_value("pass", {"ruff": "pass", "mypy": "pass"})),
    (tr.FILES, tr.files_value(["src/login.py", "tests/test_login.py"])),
    (tr.OPERATOR, "jsmith"),
    (tr.CO_AUTHORED_BY, "Patchgate <patchgate@example.invalid>"),
]


def test_formatted_message_round_trips_through_a_real_commit(repo: Path) -> None:
    message = format_message(
        "patchgate: fix login", "Verified in issue_fix_login.", PROMOTE_TRAILERS
    )
    sha = commit(repo, message)

    expected = {key: [value] for key, value in PROMOTE_TRAILERS}
    assert commit_trailers(str(repo), sha) == expected
    by_git = git(repo, "log", "-1", "--format=%B", sha)
    assert git(repo, "interpret-trailers", "--parse", stdin=by_git) == "".join(
        f"{key}: {value}\n" for key, value in PROMOTE_TRAILERS
    )
    assert expected[tr.VERIFICATION] == ["pass; gates: ruff=pass, mypy=pass"]
    assert tr.split_files(expected[tr.FILES][0]) == ["src/login.py", "tests/test_login.py"]


def test_multi_line_values_are_flattened_and_empty_ones_left_out(repo: Path) -> None:
    message = format_message(
        "Revert patchgate: fix login",
        "This reverts commit abc.",
        [
            (tr.ROLLBACK_ID, "rb-1"),
            (tr.REASON, "post-merge CI\nfound a regression\r\n  in startup"),
            (tr.FAILURE_CONTEXT, ""),
            (tr.OPERATOR, "   "),
        ],
    )
    sha = commit(repo, message)

    assert message.endswith(
        "\n\nPatchgate-Rollback-Id: rb-1\n"
        "Patchgate-Reason: post-merge CI found a regression   in startup\n"
    )
    assert commit_trailers(str(repo), sha) == {
        tr.ROLLBACK_ID: ["rb-1"],
        tr.REASON: ["post-merge CI found a regression   in startup"],
    }


def test_body_that_looks_like_trailers_or_a_patch_does_not_confuse_the_reader() -> None:
    body = "Note: this paragraph is not trailers.\n\n---\nA line of dashes, then more text.\n"
    message = format_message("fix: subject with a colon", body, [(tr.PATCH_ID, "p-9")])

    assert parse_trailers(message) == {tr.PATCH_ID: ["p-9"]}


def test_bad_trailer_key_is_refused() -> None:
    with pytest.raises(ValueError, match="trailer key"):
        format_message("s", "", [("Bad Key", "v")])


def test_patchgate_commits_finds_only_patchgate_commits(repo: Path) -> None:
    commit(repo, "plain commit\n")
    promoted = commit(repo, format_message("patchgate: fix a", "", PROMOTE_TRAILERS))
    commit(repo, "docs: quote a marker\n\nPatchgate-Patch-Id: not-a-trailer\n\nmore prose here\n")
    commit(repo, "signed commit\n\nSigned-off-by: A U Thor <a@example.invalid>\n")
    reverted = commit(
        repo,
        format_message(
            "Revert patchgate: fix a",
            f"This reverts commit {promoted}.",
            [(tr.ROLLBACK_ID, "rb-7"), (tr.REVERTS, promoted), (tr.OPERATOR, "jsmith")],
        ),
    )
    commit(repo, "another plain commit\n")

    found = patchgate_commits(str(repo))

    assert [(c.sha, c.subject) for c in found] == [
        (reverted, "Revert patchgate: fix a"),
        (promoted, "patchgate: fix a"),
    ]
    for info in found:
        assert info.trailers == commit_trailers(str(repo), info.sha)
    assert found[0].first(tr.REVERTS) == promoted
    assert found[1].first("patchgate-patch-id") == "fix_login-20251029-143022"
    assert patchgate_commits(str(repo), limit=1) == found[:1]
    assert patchgate_commits(str(repo), rev=f"{promoted}..HEAD") == found[:1]


def test_patchgate_commits_of_an_empty_repository_is_empty(repo: Path) -> None:
    assert patchgate_commits(str(repo)) == []


def test_bad_revision_is_a_patchgate_error(repo: Path) -> None:
    commit(repo, "plain\n")
    with pytest.raises(PatchgateError) as err:
        patchgate_commits(str(repo), rev="no-such-branch")
    assert err.value.stage == "TRAILERS"
    with pytest.raises(PatchgateError):
        patchgate_commits(str(repo), rev="--all")
    with pytest.raises(PatchgateError):
        commit_trailers(str(repo), "-p")


def fast_import_history(repo: Path, count: int, every: int) -> int:
    """``count`` commits in one ``git fast-import``; every ``every``-th is a patchgate commit."""
    chunks, marked = [], 0
    for i in range(count):
        if i % every == 0:
            message = format_message(f"patchgate: p{i}", "", [(tr.PATCH_ID, f"p{i}")])
            marked += 1
        else:
            message = f"commit {i}\n\nbody {i}\n"
        data = message.encode()
        parent = f"from :{i}\n" if i else ""
        chunks.append(
            f"commit refs/heads/main\nmark :{i + 1}\n"
            f"committer T <t@example.invalid> {1_700_000_000 + i} +0000\n"
            f"data {len(data)}\n{message}{parent}"
            f"M 644 inline f.txt\ndata {len(str(i))}\n{i}\n\n"
        )
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=repo, input="".join(chunks).encode(), check=True
    )
    return marked


def test_patchgate_commits_stays_fast_on_a_10000_commit_history(repo: Path) -> None:
    marked = fast_import_history(repo, 10_000, every=97)

    start = time.monotonic()
    found = patchgate_commits(str(repo))
    elapsed = time.monotonic() - start

    assert len(found) == marked == 104
    assert found[0].subject == "patchgate: p9991" and found[-1].subject == "patchgate: p0"
    assert elapsed < 2.0, f"patchgate_commits took {elapsed:.2f}s on 10,000 commits"

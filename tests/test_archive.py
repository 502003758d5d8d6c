"""Deterministic archives: same entries, same bytes; links stored as links."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

from conftest import git, make_repo
from patchgate import archive


def test_same_entries_give_identical_bytes_in_any_order(tmp_path: Path) -> None:
    entries = [("b.txt", stat.S_IFREG | 0o644, b"b"), ("a/c.txt", stat.S_IFREG | 0o755, b"c")]
    archive.write_zip(str(tmp_path / "one.zip"), entries)
    archive.write_zip(str(tmp_path / "two.zip"), list(reversed(entries)))
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    info = zipfile.ZipFile(tmp_path / "one.zip").infolist()
    assert [i.filename for i in info] == ["a/c.txt", "b.txt"]
    assert all(i.date_time == archive.FIXED_TIME for i in info)


def test_symlink_is_stored_as_a_link_not_followed(tmp_path: Path) -> None:
    archive.write_zip(str(tmp_path / "l.zip"), [("etc", stat.S_IFLNK | 0o777, b"/etc")])
    (info,) = zipfile.ZipFile(tmp_path / "l.zip").infolist()
    assert stat.S_ISLNK(info.external_attr >> 16)
    assert zipfile.ZipFile(tmp_path / "l.zip").read("etc") == b"/etc"


def test_caches_and_environments_are_excluded() -> None:
    for path in (
        ".git/config",
        "venv/bin/x",
        ".venv/y",
        "a/.mypy_cache/z",
        ".ruff_cache/q",
        ".pytest_cache/v",
        "pkg/__pycache__/m.pyc",
        "m.pyc",
    ):
        assert archive.excluded(path), path
    assert not archive.excluded("src/venvironment.py")


def test_the_commit_zip_holds_every_file_whatever_gitattributes_say(tmp_path: Path) -> None:
    files = {
        ".gitattributes": "hidden.py export-ignore\nsubst.txt export-subst\n",
        "hidden.py": "x = 1\n",
        "subst.txt": "$Format:%H$\n",
        "run.sh": "#!/bin/sh\n",
    }
    repo = make_repo(tmp_path / "repo", files)
    os.chmod(repo / "run.sh", 0o755)
    os.symlink("hidden.py", repo / "link")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mode and link")
    dest = tmp_path / "c.zip"
    archive.commit_zip(str(repo), "HEAD", str(dest))
    with zipfile.ZipFile(dest) as zf:
        got = {i.filename: (i.external_attr >> 16, zf.read(i)) for i in zf.infolist()}
    assert {k: v[1].decode() for k, v in got.items() if k != "link" and k != "run.sh"} == {
        k: v for k, v in files.items() if k != "run.sh"
    }
    assert got["run.sh"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert got["link"] == (stat.S_IFLNK | 0o777, b"hidden.py")

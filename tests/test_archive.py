"""Deterministic archives: same entries, same bytes; links stored as links."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from tasks import archive


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

"""The parsing the gates and the apply step do, tested directly (milliseconds, no doit run).

JUnit files as pytest writes them, the before/after classification of a baseline, the headers
of a diff, and how a file a jailed step wrote is read (never followed, never blocking): what
`doit verify` reads from a gate's output or a patch, case by case. The end-to-end tests in
test_gates.py and test_verify.py show the same verdicts through doit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from patchgate import apply, config, gates, steps, yamllimits
from patchgate.errors import PatchgateError

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
  <testcase classname="tests.test_ops" name="test_add" time="0.001"/>
  <testcase classname="tests.test_ops" name="test_sub" time="0.001">
    <failure message="assert 2 == 1&#10;second line">long traceback</failure>
  </testcase>
  <testcase classname="tests.test_ops.TestMul" name="test_mul[1]" time="0.001">
    <error message="failed on setup with &quot;x&quot;">E   fixture 'x' not found
E   ValueError: the setup's own error</error>
  </testcase>
  <testcase classname="tests.test_ops" name="test_skip" time="0.0">
    <skipped message="later"/>
  </testcase>
</testsuite></testsuites>
"""


def test_junit_outcomes_by_pytest_node_id() -> None:
    outcomes = gates.parse_junit(JUNIT.encode())
    assert outcomes == {
        "tests/test_ops.py::test_add": ("pass", ""),
        "tests/test_ops.py::test_sub": ("fail", "assert 2 == 1"),
        "tests/test_ops.py::TestMul::test_mul[1]": ("fail", "ValueError: the setup's own error"),
        "tests/test_ops.py::test_skip": ("skip", ""),
    }


def test_a_collection_failure_names_the_error_pytest_quotes() -> None:
    xml = (
        '<testsuite><testcase classname="" name="tests.test_ops">'
        '<error message="collection failure">'
        "tests/test_ops.py:1: in &lt;module&gt;\n"
        "E   ModuleNotFoundError: No module named 'calc'</error></testcase></testsuite>"
    )
    assert gates.parse_junit(xml.encode()) == {
        "tests/test_ops.py": ("fail", "ModuleNotFoundError: No module named 'calc'")
    }


def test_a_repeated_test_case_keeps_its_failure() -> None:
    """pytest writes a test twice when its teardown errs after it passed: the error counts."""
    xml = (
        '<testsuite><testcase classname="t" name="test_x"><error message="teardown"/></testcase>'
        '<testcase classname="t" name="test_x"/></testsuite>'
    )
    assert gates.parse_junit(xml.encode()) == {"t.py::test_x": ("fail", "teardown")}


@pytest.mark.parametrize("data", [b"", b"not xml", b"<testsuite><testcase"])
def test_what_is_not_junit_parses_to_none(data: bytes) -> None:
    assert gates.parse_junit(data) is None


def test_an_empty_report_has_no_tests() -> None:
    assert gates.parse_junit(b"<testsuites/>") == {}


def test_a_long_failure_message_is_one_short_line() -> None:
    xml = f'<testsuite><testcase classname="t" name="test_x"><failure message="{"x" * 300}"/>'
    (outcome, message) = gates.parse_junit(f"{xml}</testcase></testsuite>".encode())["t.py::test_x"]
    assert outcome == "fail"
    # the verdict shortens the message it quotes; the JUnit reading keeps the first line whole
    assert len(message) == 300
    short = gates._short("a\n  b " + "y" * 300)
    assert short.startswith("a b y") and len(short) == gates.MESSAGE_WIDTH
    assert short.endswith("…")


# --- a baseline: what the patch changed in the tests' outcomes -----------------------------------


def test_classify_counts_a_new_test_from_pass_and_ignores_skips() -> None:
    base = {"t::a": "fail", "t::b": "pass", "t::c": "pass", "t::d": "fail", "t::s": "pass"}
    patch = {"t::a": "pass", "t::b": "pass", "t::c": "fail", "t::d": "fail", "t::new": "fail"}
    patch["t::s"] = "skip"
    assert gates.classify(base, patch) == {
        "fail->pass": ["t::a"],
        "pass->pass": ["t::b"],
        "pass->fail": ["t::c", "t::new"],
        "fail->fail": ["t::d"],
    }


# --- a diff's headers ----------------------------------------------------------------------------


def diff_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.diff"
    path.write_text(text)
    return str(path)


def test_header_names_stop_at_a_tab_and_read_quoted_names(tmp_path: Path) -> None:
    diff = diff_file(
        tmp_path,
        '--- a/x y.py\t2024-01-01 00:00:00\n+++ "b/t\\303\\251st.py"\n@@ -1 +1 @@\n-a\n+b\n',
    )
    assert apply.header_names(diff) == ["a/x y.py", "b/tést.py"]


@pytest.mark.parametrize(
    ("headers", "prefixed"),
    [
        ("--- a/x.py\n+++ b/x.py\n", True),
        ("--- /dev/null\n+++ b/new.py\n", True),  # a new file: /dev/null is no path
        ("--- x.py\n+++ x.py\n", False),
        ("--- a/x.py\n+++ x.py\n", False),
        ("", False),  # no headers at all: nothing says the diff has the prefixes
    ],
)
def test_ab_prefixes_settle_strip_only_when_every_name_has_one(
    tmp_path: Path, headers: str, prefixed: bool
) -> None:
    diff = diff_file(tmp_path, headers + "@@ -1 +1 @@\n-a\n+b\n")
    assert apply._has_ab_prefixes(diff) is prefixed


def test_diff_paths_read_every_header_that_names_a_path(tmp_path: Path) -> None:
    diff = diff_file(
        tmp_path,
        "diff --git a/old name.py b/new name.py\nrename from old name.py\nrename to new name.py\n"
        '--- a/old name.py\n+++ "b/new\\tname.py"\n',
    )
    # a rename's ``diff --git`` names with spaces cannot be split (git reads them from the
    # rename lines too): they add nothing; the rename and ---/+++ lines name every path
    assert apply.diff_paths(diff) == [
        "old name.py",
        "new name.py",
        "a/old name.py",
        "b/new\tname.py",
    ]


def test_a_corrupt_diff_is_told_apart_from_a_stale_one() -> None:
    said = "error: corrupt patch at line 7\n"
    assert apply.is_corrupt(said) and not apply.is_corrupt("error: patch failed: a.py:3\n")
    advice = apply.corrupt_advice("p.diff", "checking\n" + said)
    assert advice.startswith("diff p.diff is not a valid unified diff (error: corrupt patch")
    assert "not stale" in advice and "\n" not in advice


# --- a file a jailed step wrote, read from outside the jail -------------------------------------


def test_read_untrusted_reads_a_plain_file_and_nothing_as_none(tmp_path: Path) -> None:
    (tmp_path / "j.xml").write_bytes(b"<testsuite/>")
    assert steps.read_untrusted(str(tmp_path / "j.xml"), 100) == b"<testsuite/>"
    assert steps.read_untrusted(str(tmp_path / "missing.xml"), 100) is None


@pytest.mark.parametrize(
    ("make", "why"),
    [
        pytest.param(lambda p: os.symlink("/etc/passwd", p), "a symbolic link", id="symlink"),
        pytest.param(os.mkfifo, "a FIFO", id="fifo"),  # opened without blocking: no hang
        pytest.param(os.mkdir, "a directory", id="directory"),
    ],
)
def test_read_untrusted_refuses_what_is_no_plain_file(
    tmp_path: Path, make: Callable[[str], object], why: str
) -> None:
    path = str(tmp_path / "junit.xml")
    make(path)
    with pytest.raises(steps.NotReadable) as err:
        steps.read_untrusted(path, 1 << 20)
    assert str(err.value) == why and not isinstance(err.value, steps.TooBig)
    assert gates.junit_refused("pytest", err.value) == (
        f"pytest: the gate's JUnit file is not a regular file ({why}); it was not read; "
        "the gate must write {junit} as a plain file"
    )


def test_read_untrusted_refuses_a_file_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    with open(path, "wb") as fh:
        fh.truncate(gates.MAX_JUNIT_BYTES + 1)  # sparse: no 64 MiB written
    with pytest.raises(steps.TooBig) as err:
        steps.read_untrusted(str(path), gates.MAX_JUNIT_BYTES)
    assert str(err.value) == "larger than 64 MiB"
    said = gates.junit_refused("pytest", err.value)
    assert said.startswith("pytest: the gate's JUnit file is larger than 64 MiB; it was not read")
    path.write_bytes(b"x" * 10)
    assert steps.read_untrusted(str(path), 10) == b"x" * 10  # the limit itself is allowed


# --- patchgate.yaml: the limits of the YAML parse --------------------------------------------


def refused_config(raw: bytes) -> str:
    with pytest.raises(PatchgateError) as err:
        config.parse(raw)
    assert err.value.stage == "CONFIG" and "\n" not in err.value.message
    return err.value.message


def test_yaml_nested_past_the_limit_is_refused_before_it_is_composed() -> None:
    deep = b"gates: " + b"[" * 5000 + b"]" * 5000 + b"\n"  # 10 KB; recursion would crash
    assert refused_config(deep) == (
        "patchgate.yaml: nested deeper than 32 levels; write it out plainly"
    )
    # the limit itself is allowed: the mapping is level 1, 31 lists below it
    value: list[Any] = []
    for _ in range(30):
        value = [value]
    assert yamllimits.load(b"a: " + b"[" * 31 + b"]" * 31, 100, 32, 1000) == {"a": value}
    with pytest.raises(yamllimits.TooBig):
        yamllimits.load(b"a: " + b"[" * 32 + b"]" * 32, 100, 32, 1000)


def test_yaml_aliases_are_counted_and_expanded() -> None:
    many = b"a: &a x\nb: [" + b", ".join([b"*a"] * 101) + b"]\n"
    assert "too many aliases (more than 100)" in refused_config(many)
    assert yamllimits.load(b"a: &a [1, 2]\nb: *a\n", 100, 32, 1000) == {"a": [1, 2], "b": [1, 2]}
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%c: &%c [%s]\n" % (ord("b") + i, ord("b") + i, b", ".join([b"*%c" % (ord("a") + i)] * 10))
        for i in range(5)
    )
    assert "expands to more than 100000 values" in refused_config(bomb)

"""Acceptance (issue 11): patchgate on a real third-party project nobody here wrote.

semver (BSD-3-Clause, src layout, black + flake8 + mypy in its tox.ini/setup.cfg, 327 tests)
is bundled as three consecutive PyPI releases (tests/data/semver.bundle, made by
tests/data/make_semver_bundle.py). Its own venv is ``tool_env``, with the usual editable
install; the gates are the detected defaults; ``baseline: true``. Real upstream diffs
(3.0.0 -> 3.0.1 -> 3.0.2, limited to src/semver and tests) verify, promote with PUSH: OK and
land byte-identical to upstream; bad patches built from its real code fail with the right
STAGE and a REASON naming the test or finding, and leave live byte-identical.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, Project, Result, git, tree_state
from conftest import script as patch_script

BUNDLE = ROOT / "tests" / "data" / "semver.bundle"
VENV_BIN = Path(sys.executable).parent
# The tools semver's own venv holds: its test runner and the checkers its tox.ini runs.
# black as in 2023, when these releases were made (pyproject's dev extra has the same pin).
TOOLS = ("pytest", "pytest-cov", "black>=23.1,<24", "flake8", "mypy", "setuptools")


def uv(*args: str) -> None:
    """uv from this checkout's venv: from its cache (bin/setup filled it) without network,
    and from the index only for what the cache does not hold."""
    argv = [sys.executable, "-m", "uv", *args]
    if args[0] == "pip":
        done = subprocess.run([*argv, "--offline"], capture_output=True, check=False)
        if done.returncode == 0:
            return
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="session")
def semver_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """semver's own virtual environment (its tools; the editable install comes per live)."""
    if subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True).returncode:
        pytest.skip("uv is not installed in this venv (bin/setup installs it)")
    venv = tmp_path_factory.mktemp("semver-env") / "venv"
    uv("venv", "-q", "--python", sys.executable, str(venv))
    # compiled now, as pip does: the jail binds the venv read-only, where nothing could cache it
    uv(
        "pip",
        "install",
        "-q",
        "--compile-bytecode",
        "--python",
        str(venv / "bin" / "python"),
        *TOOLS,
    )
    return venv


@dataclass
class Semver:
    """The project: live (a clone of the bundle at 3.0.0), its remote, semver's venv."""

    project: Project
    remote: Path
    upstream: Path  # the bundle's clone: the real releases to compare with

    def run(self, *args: str) -> Result:
        return self.project.run(*args, timeout=300)

    def diff(self, old: str, new: str) -> str:
        """The real upstream change between two releases, in the package and its tests."""
        name = f"release_{new.replace('.', '_').lstrip('v')}.diff"
        text = git(self.upstream, "diff", "--binary", old, new, "--", "src/semver", "tests")
        return self.project.patch(name, text + "\n")


@pytest.fixture(scope="module")
def semver(tmp_path_factory: pytest.TempPathFactory, semver_env: Path) -> Semver:
    top = tmp_path_factory.mktemp("semver")
    upstream = top / "upstream"
    git(top, "clone", "-q", str(BUNDLE), str(upstream))
    remote = top / "remote.git"
    git(top, "clone", "-q", "--bare", str(BUNDLE), str(remote))
    git(remote, "update-ref", "refs/heads/main", "v3.0.0")
    path = top / "project"
    live = path / "live"
    git(top, "clone", "-q", str(remote), str(live))
    for key, value in (("user.name", "Semver Maintainer"), ("user.email", "m@semver.invalid")):
        git(live, "config", key, value)
    uv(
        "pip", "install", "-q", "--python", str(semver_env / "bin" / "python"),
        "--no-deps", "--no-build-isolation", "-e", str(live),
    )  # fmt: skip
    (path / "patches").mkdir()
    project = Project(path, live)
    # No gates: the defaults detected from semver's own configuration.
    project.configure(live_repo="live", tool_env=str(semver_env), baseline=True)
    return Semver(project, remote, upstream)


def result_json(project: Project, issue: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((project.ws(issue) / "result.json").read_text())
    return data


def test_detected_gates_are_semvers_own(semver: Semver) -> None:
    res = semver.run("config")
    assert res.code == 0, res.out
    assert '["black", "flake8", "mypy", "pytest"]  (detected, see below)' in res.out
    assert "black        pyproject.toml has [tool.black]" in res.out
    assert "flake8       setup.cfg has [flake8]" in res.out
    assert "ruff" not in res.out.split("# detected gates", 1)[1]


@dataclass(frozen=True)
class Bad:
    issue: str
    patch: str
    stage: str
    reason: tuple[str, ...]


VERSION = "src/semver/version.py"


def edit(path: str, old: str, new: str, also: str = "") -> str:
    """A patch script replacing one real line of semver (it fails loudly if the line is gone)."""
    return patch_script(
        [path],
        f"p = Path({path!r})\ntext = p.read_text()\nassert {old!r} in text\n"
        f"p.write_text(text.replace({old!r}, {new!r}, 1))\n{also}",
    )


BAD = [
    Bad(
        "regression",
        edit(VERSION, "return cls(self._major + 1)", "return cls(self._major + 2)"),
        "GATES",
        ("pytest", "tests/test_bump.py::test_should_bump_major"),
    ),
    Bad(
        "forgotten_reset",
        edit(
            VERSION,
            "return cls(self._major, self._minor + 1)",
            "return cls(self._major, self._minor + 1, self._patch)",
        ),
        "GATES",
        ("pytest", "tests/test_bump.py::test_should_bump_minor"),
    ),
    Bad(
        "import_crash",
        # an unbalanced group in a class-level regex: type-checks, raises re.error at import
        edit(VERSION, r'(?:[^\d]*(\d+)[^\d]*)+")', r'(?:[^\d]*(\d+)[^\d]*+")'),
        "GATES",
        ("pytest",),
    ),
    Bad(
        "new_finding",
        edit(
            VERSION,
            "        validparts = cls.NAMES[:-1]\n",
            '        validparts = cls.NAMES[:-1]\n        token = prerelease_token or "rc"\n',
        ),
        "GATES",
        ("flake8", "src/semver/version.py", "F841", "local variable 'token'"),
    ),
    Bad(
        "undeclared",
        edit(
            VERSION,
            "return cls(self._major + 1)",
            "return cls(self._major + 1)  # bump",
            also="c = Path('src/semver/cli.py')\nc.write_text(c.read_text() + '# touched\\n')\n",
        ),
        "SCOPE",
        ("src/semver/cli.py",),
    ),
]


@pytest.fixture(scope="module")
def bad_runs(semver: Semver) -> dict[str, tuple[Result, bool]]:
    """Every bad patch verified on the base 3.0.0: its result and whether live stayed equal."""
    runs = {}
    for bad in BAD:
        before = semver.project.state()
        res = semver.run("verify", f"patch={semver.project.patch(bad.issue + '.py', bad.patch)}")
        runs[bad.issue] = (res, semver.project.state() == before)
    return runs


@pytest.mark.parametrize("bad", BAD, ids=[b.issue for b in BAD])
def test_a_bad_patch_fails_naming_the_test_or_finding(
    bad_runs: dict[str, tuple[Result, bool]], bad: Bad
) -> None:
    res, unchanged = bad_runs[bad.issue]
    assert unchanged, "live changed"
    assert res.code != 0, res.out
    summary = res.summary
    assert summary.get("RESULT") == "FAIL", res.out
    assert summary.get("STAGE") == bad.stage, res.out
    for word in bad.reason:
        assert word in summary.get("REASON", ""), res.out


def test_under_baseline_the_reason_keeps_the_line(
    bad_runs: dict[str, tuple[Result, bool]],
) -> None:
    res, _ = bad_runs["new_finding"]
    reason = res.summary.get("REASON", "")
    assert re.search(
        r"src/semver/version\.py:448(:\d+)?: F841 .*\(new; not on the base\)", reason
    ), res.out


def test_an_import_crash_names_the_line_that_raised(
    bad_runs: dict[str, tuple[Result, bool]],
) -> None:
    res, _ = bad_runs["import_crash"]
    # semver's conftest.py imports semver, so no test file gets as far as collecting: pytest
    # reports the crash itself, and REASON names the line of the package that raised.
    assert re.search(r"REASON: pytest: src/semver/version\.py:80\b", res.out), res.out


def test_real_upstream_releases_verify_promote_and_land_byte_identical(
    semver: Semver, bad_runs: dict[str, tuple[Result, bool]]
) -> None:
    for old, new in (("v3.0.0", "v3.0.1"), ("v3.0.1", "v3.0.2")):
        patch = semver.diff(old, new)
        issue = Path(patch).stem
        res = semver.run("verify", f"patch={patch}")
        assert res.summary.get("RESULT") == "SUCCESS", res.out
        assert result_json(semver.project, issue)["verification_status"] == "pass"
        res = semver.run("promote", f"issue={issue}", f"message=semver {new}")
        assert res.summary.get("RESULT") == "SUCCESS", res.out
        assert res.summary.get("PUSH") == "OK", res.out
        live = semver.project.live
        assert git(semver.remote, "rev-parse", "main") == git(live, "rev-parse", "HEAD")
        for folder in ("src/semver", "tests"):
            assert git(live, "rev-parse", f"HEAD:{folder}") == git(
                semver.upstream, "rev-parse", f"{new}:{folder}"
            ), f"{folder} differs from upstream {new}"
    head, status, _ = tree_state(semver.project.live)
    assert status == "" and head == git(semver.remote, "rev-parse", "main")

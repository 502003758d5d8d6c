"""patchgate on a real project (semver, tests/data/semver.bundle): verify vs the gates by hand.

    python bench/bench_real_project.py [-k N] [--quick] [--fs disk|shm|PATH]

Printed side by side in one run (timed interleaved, the median of k runs each), for the real
upstream change 3.0.1 -> 3.0.2 (src/semver/__about__.py, src/semver/version.py,
tests/test_subclass.py) on live at 3.0.1, semver's own venv as tool_env (editable install),
the gates detected from semver's configuration (black, flake8, mypy on src, pytest):

1. the gates by hand, once: the same commands, unjailed, in a checkout of the patched tree;
2. the first verify on a new base (no workspace, no doit state, no cached base run),
   without and with ``baseline``;
3. a re-verify after a one-file edit of the patch (version.py changes), without and with
   ``baseline``.

Ratios are against the hand run. Aims (issue 11): re-verify with baseline <= 1.5x, first
verify with baseline <= 2.5x. Figures: docs/performance-real-project.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchgate import detect

from bench.common import (
    ROOT,
    Bench,
    Timed,
    cache_bytecode,
    git,
    scratch_dir,
    side_by_side,
    summary,
    table,
)

BUNDLE = ROOT / "tests" / "data" / "semver.bundle"
TOOLS = ("pytest", "pytest-cov", "black>=23.1,<24", "flake8", "mypy", "setuptools")
CHANGED = ("src/semver/__about__.py", "src/semver/version.py", "tests/test_subclass.py")


def uv(*args: str) -> None:
    """uv from this checkout's venv: from its cache (bin/setup filled it) without network,
    and from the index only for what the cache does not hold."""
    argv = [sys.executable, "-m", "uv", *args]
    if args[0] == "pip":
        done = subprocess.run([*argv, "--offline"], capture_output=True, check=False)
        if done.returncode == 0:
            return
    subprocess.run(argv, check=True, capture_output=True)


def semver_env(top: Path, live: Path) -> Path:
    venv = top / "semver-venv"
    uv("venv", "-q", "--python", sys.executable, str(venv))
    python = str(venv / "bin" / "python")
    uv("pip", "install", "-q", "--compile-bytecode", "--python", python, *TOOLS)
    uv(
        "pip",
        "install",
        "-q",
        "--python",
        python,
        "--no-deps",
        "--no-build-isolation",
        "-e",
        str(live),
    )
    return venv


def release_script(upstream: Path, tag: str, edit: str = "") -> str:
    """A patch script writing the release's version of CHANGED (``edit`` appended to version.py)."""
    contents = {p: git(upstream, "show", f"{tag}:{p}") + "\n" for p in CHANGED}
    contents["src/semver/version.py"] += edit
    return (
        f"from pathlib import Path\n\nFILES = {list(CHANGED)!r}\nCONTENT = {contents!r}\n\n"
        "for name, text in CONTENT.items():\n    Path(name).write_text(text)\n"
    )


def make_project(top: Path, name: str, venv: Path | None, baseline: bool) -> Bench:
    path = top / name
    live = path / "live"
    git(top, "clone", "-q", str(BUNDLE), str(live))
    git(live, "checkout", "-q", "-B", "main", "v3.0.1")
    (path / "patches").mkdir()
    bench = Bench(path, 0)
    bench.configure(live_repo="live", baseline=baseline, remote=None)
    if venv is not None:
        bench.configure(tool_env=str(venv))
    return bench


def hand_run(top: Path, upstream: Path, venv: Path) -> list[list[str]]:
    """The detected gates' commands as a user types them, in a checkout of the patched tree."""
    tree = top / "by-hand"
    git(top, "clone", "-q", str(upstream), str(tree))
    git(tree, "checkout", "-q", "v3.0.2")
    scratch = top / "by-hand-cache"
    argvs = []
    for gate, _ in detect.detect_gates(str(tree), str(venv / "bin")):
        files = [
            f
            for f in CHANGED
            if any(fnmatch(f, g) or fnmatch(os.path.basename(f), g) for g in gate["files"])
        ]
        if "{files}" in gate["command"] and not files:
            continue
        argv: list[str] = []
        for arg in gate["command"]:
            if arg == "{files}":
                argv.extend(files)
            else:
                argv.append(
                    arg.replace("{python}", str(venv / "bin" / "python"))
                    .replace("{cache}", str(scratch / gate["name"]))
                    .replace("{junit}", str(scratch / "junit.xml"))
                )
        if "/" not in argv[0]:
            argv[0] = str(venv / "bin" / argv[0])
        argvs.append(argv)
    return argvs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-k", type=int, default=3, help="timed runs of each (median)")
    parser.add_argument("--fs", default="disk", help="disk, shm or a folder")
    parser.add_argument("--quick", action="store_true", help="one run of each (run_all --quick)")
    args = parser.parse_args()
    if args.quick:
        args.k = 1
    top = scratch_dir(args.fs, "pgbench-semver-")
    cache_bytecode(top / "pycache")
    try:
        upstream = top / "upstream"
        git(top, "clone", "-q", str(BUNDLE), str(upstream))
        plain = make_project(top, "no-baseline", None, baseline=False)
        venv = semver_env(top, plain.live)
        plain.configure(tool_env=str(venv))
        based = make_project(top, "baseline", venv, baseline=True)
        original = release_script(upstream, "v3.0.2")
        edited = release_script(upstream, "v3.0.2", "# re-verified\n")
        argvs = hand_run(top, upstream, venv)
        tree = top / "by-hand"

        def by_hand() -> None:
            git(tree, "checkout", "-q", "--", ".")
            for argv in argvs:
                env = {**os.environ, "COVERAGE_FILE": str(top / ".coverage")}
                subprocess.run(argv, cwd=tree, capture_output=True, check=False, env=env)

        def first(bench: Bench) -> Timed:
            def before() -> None:
                bench.forget()
                bench.patch("release.py", original)

            return Timed(lambda: bench.run("verify", "patch=patches/release.py"), before)

        def again(bench: Bench) -> Timed:
            state = {"n": 0}

            def before() -> None:
                state["n"] += 1
                bench.patch("release.py", edited if state["n"] % 2 else original)

            return Timed(lambda: bench.run("verify", "patch=patches/release.py"), before)

        print(f"semver 3.0.1 -> 3.0.2, {len(argvs)} gates by hand: " +
              "; ".join(os.path.basename(a[0]) for a in argvs), flush=True)  # fmt: skip
        hand, f_plain, f_based, r_plain, r_based = side_by_side(
            [Timed(by_hand), first(plain), first(based), again(plain), again(based)], args.k
        )
        rows = [
            ["the gates by hand, once", f"{hand:.2f}", "1.00x", ""],
            ["first verify, new base, no baseline", f"{f_plain:.2f}", f"{f_plain / hand:.2f}x", ""],
            ["first verify, new base, baseline", f"{f_based:.2f}", f"{f_based / hand:.2f}x",
             "<= 2.5x"],
            ["re-verify, one-file edit, no baseline", f"{r_plain:.2f}", f"{r_plain / hand:.2f}x",
             ""],
            ["re-verify, one-file edit, baseline", f"{r_based:.2f}", f"{r_based / hand:.2f}x",
             "<= 1.5x"],
        ]  # fmt: skip
        print(table(rows, [f"semver (327 tests), median of k={args.k}", "s", "vs hand", "aim"]))
        summary("semver first verify, baseline", f"{f_based:.2f} s", f"{hand:.2f} s by hand",
                f"{f_based / hand:.2f}x", "<= 2.5x")  # fmt: skip
        summary("semver re-verify, baseline", f"{r_based:.2f} s", f"{hand:.2f} s by hand",
                f"{r_based / hand:.2f}x", "<= 1.5x")  # fmt: skip
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()

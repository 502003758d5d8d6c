"""Re-verifying an edited patch: patchgate vs a hand script doing the same work, in one run.

    python bench/bench_reverify.py [--files 20000] [--quick] [--fs disk|shm|PATH] [-k N]
                                   [--jail bwrap|none]

Issue 13, item 7 (aim: patchgate <= 1.3x the hand script on re-verify). Warm, on a generated
repository of --files files (bench/common.py), with the default gates (ruff format, ruff check,
mypy, pytest):

a. re-verify after editing a one-file patch: `doit verify patch=P` on its existing workspace,
   vs a hand script updating its own existing worktree (git reset --hard, run the patch, git add,
   list the changed .py files) and running the same four tools on it
c. the re-run after a mypy error: the patch gains a type error (run, fails at mypy; untimed),
   then is fixed; the timed figure is the fixed re-run, for both

With --baseline DIR, patchgate from DIR/patchgate is timed too, interleaved on the same project
(e.g. `git archive main tasks | tar -x -C DIR && mv DIR/tasks DIR/patchgate`, schemas/ beside
it): before and after a change under the same load.

Like with like: with --jail bwrap (the default) both jail every step in the same bubblewrap
jail (patchgate's own ``jail.command``, one jail start per tool and one for the patch, the tools
getting the environment patchgate gives them: PYTHONDONTWRITEBYTECODE=1, HOME=/tmp); with
--jail none neither jails and patchgate runs with ``jail: none``. The mypy cache is warm for both
(each its own). The hand script does no scope check, no live guard, no records: the difference
is everything patchgate adds.

The AM runner the issue also compares against is not on this machine: it is not measured here.
Contenders are timed interleaved (bench.common.side_by_side), the median of k runs each. Each
figure also has a CPU row, the user + sys time of the processes a run started (those in a
bubblewrap jail not counted: see cpu_of), which a loaded machine blurs much less than the wall
time; its last column is patchgate's CPU beyond the hand script's.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchgate import jail
from patchgate.config import DEFAULT_GATES

from bench.common import (
    Bench,
    Timed,
    cache_bytecode,
    edit_script,
    git,
    make_project,
    module_text,
    scratch_dir,
    side_by_side,
    summary,
    table,
)

EDITED = "pkg0000/m01.py"
# A type error mypy finds and nothing else does: ruff and pytest pass.
TYPE_ERROR = 'WRONG: int = "not an int"\n'
FILES = "@@FILES@@"  # where the hand script puts its $files

Row = tuple[str, str, str, str, str]
rows: list[Row] = []


def row(what: str, value: str, reference: str = "", ratio: str = "", aim: str = "") -> None:
    rows.append((what, value, reference, ratio, aim))
    print(f"  {what}: {value}  {reference}  {ratio}", file=sys.stderr, flush=True)
    summary(what, value, reference, ratio, aim)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def cpu_of(fn: Callable[[], object], spent: list[float]) -> Callable[[], None]:
    """``fn``, adding the CPU time (user + sys) of the processes it ran to ``spent``.

    On a shared machine a run's wall time grows with the load, its CPU time much less. What
    runs in a bubblewrap jail is not counted (its own pid namespace reaps it, out of sight of
    getrusage): jailed, the CPU rows are the work outside the jail, the difference is
    patchgate's own; with --jail none they include the tools.
    """

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        fn()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

    return run


def compare(what: str, ours: dict[str, Timed], theirs: Timed, k: int) -> None:
    """Rows for the wall times of each of ``ours`` and of ``theirs`` side by side, and for CPU."""
    things = [*ours.values(), theirs]
    cpu: list[list[float]] = [[] for _ in things]
    wall = side_by_side(
        [Timed(cpu_of(t.fn, c), t.before) for t, c in zip(things, cpu, strict=True)], k
    )
    hand_cpu = statistics.median(cpu[-1])
    for i, label in enumerate(ours):
        name = f"{what}{label}"
        ratio = f"{wall[i] / wall[-1]:.2f}x"
        row(name, ms(wall[i]), f"hand script {ms(wall[-1])}", ratio, "<= 1.3x")
        mine = statistics.median(cpu[i])
        row(f"{name}, CPU", ms(mine), f"hand script {ms(hand_cpu)}", f"+{ms(mine - hand_cpu)}")


def version(n: int, bad: bool = False) -> str:
    """The edited module, version ``n``; ``bad``: with a type error."""
    return module_text(0, 1) + f"# v{n}\n" + (TYPE_ERROR if bad else "")


# --- patchgate -----------------------------------------------------------------------------------


def verify(bench: Bench, patch: str, ok: bool = True, code: str | None = None) -> None:
    """``doit verify``; with ``code``, patchgate imported from that folder (--baseline)."""
    env = {**os.environ, "PYTHONPATH": code} if code else None
    argv = bench.argv("verify", f"patch={patch}")
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    out = done.stdout + done.stderr
    if ok:
        assert "RESULT: SUCCESS" in out, out
    else:
        assert "RESULT: SUCCESS" not in out and "mypy" in out, out


# --- the hand script -----------------------------------------------------------------------------


class Hand:
    """A worktree of live kept between runs, and a shell script redoing the work in it."""

    def __init__(self, bench: Bench, jail_mode: str) -> None:
        self.bench = bench
        self.worktree = bench.path / "by-hand"
        self.patch = bench.path / "hand-patch.py"
        self.cache = bench.path / "hand-cache"
        self.cache.mkdir()
        self.write(version(0))
        git(bench.live, "worktree", "add", "-q", "--detach", str(self.worktree), "HEAD")
        self.script = self._script(jail_mode)

    def _script(self, jail_mode: str) -> str:
        prefix = sys.prefix
        python = str(Path(prefix) / "bin" / "python")

        def jailed(argv: list[str], writable: tuple[str, ...] = ()) -> str:
            spec = jail.JailSpec(
                mode=jail_mode,
                workdir=str(self.worktree),
                extra_writable=writable,
                readonly=(prefix, str(self.patch)),
            )
            # The environment patchgate gives a gate (apply.jail_env, then jail.jail_env).
            env = jail.jail_env(
                {
                    "PATH": f"{prefix}/bin:/usr/local/bin:/usr/bin:/bin",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "HOME": "/tmp",
                },
                spec,
            )
            line = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items())])
            return line + " " + shlex.join(jail.command(argv, spec)).replace(FILES, "$files")

        tool = f"{prefix}/bin"
        mypy_cache = str(self.cache / "mypy")
        return "\n".join(
            [
                "set -e",
                f"cd {shlex.quote(str(self.worktree))}",
                "git reset -q --hard",  # undo the last attempt
                jailed([python, str(self.patch)]),
                "git add -A",
                "files=$(git diff --cached --name-only HEAD -- '*.py' '*.pyi')",
                jailed([f"{tool}/ruff", "format", "--no-cache", FILES]),
                "git add -A",
                jailed([f"{tool}/ruff", "check", "--no-cache", FILES]),
                jailed(
                    [f"{tool}/mypy", "--cache-dir", mypy_cache, "--no-error-summary", FILES],
                    (str(self.cache),),
                ),
                jailed([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]),
            ]
        )

    def write(self, text: str) -> None:
        self.patch.write_text(edit_script(EDITED, text))

    def run(self, ok: bool = True) -> None:
        done = subprocess.run(["sh", "-c", self.script], capture_output=True, text=True)
        if ok != (done.returncode == 0):
            raise RuntimeError(f"hand script: exit {done.returncode}\n{done.stdout}{done.stderr}")


# --- the figures -------------------------------------------------------------------------------


def contenders(
    bench: Bench, codes: dict[str, str | None], edit: Callable[[], None]
) -> dict[str, Timed]:
    """A re-verify of the patch for each code version of patchgate, ``edit`` untimed first."""
    return {
        label: Timed(functools.partial(verify, bench, "patches/edit.py", code=code), edit)
        for label, code in codes.items()
    }


def reverify(
    bench: Bench, hand: Hand, k: int, versions: Iterator[int], codes: dict[str, str | None]
) -> None:
    """a. an edited one-file patch, verified again."""

    def edit_ours() -> None:
        bench.patch("edit.py", edit_script(EDITED, version(next(versions))))

    def edit_theirs() -> None:
        hand.write(version(next(versions)))

    compare(
        f"a. re-verify after a one-file patch edit, default gates, {bench.n_files} files",
        contenders(bench, codes, edit_ours),
        Timed(hand.run, before=edit_theirs),
        k,
    )


def after_mypy_error(
    bench: Bench, hand: Hand, k: int, versions: Iterator[int], codes: dict[str, str | None]
) -> None:
    """c. the patch gains a type error (untimed run, fails), then is fixed: the fixed re-run."""

    def break_ours() -> None:
        bench.patch("edit.py", edit_script(EDITED, version(next(versions), bad=True)))
        verify(bench, "patches/edit.py", ok=False)
        bench.patch("edit.py", edit_script(EDITED, version(next(versions))))

    def break_theirs() -> None:
        hand.write(version(next(versions), bad=True))
        hand.run(ok=False)
        hand.write(version(next(versions)))

    compare(
        f"c. re-run after a mypy error, default gates, {bench.n_files} files",
        contenders(bench, codes, break_ours),
        Timed(hand.run, before=break_theirs),
        k,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000, help="repository size (files)")
    parser.add_argument("--quick", action="store_true", help="3 runs per figure instead of 5")
    parser.add_argument("--fs", default="disk", help="disk (/tmp), shm (/dev/shm) or a folder")
    parser.add_argument("-k", type=int, default=None, help="runs per figure (median)")
    parser.add_argument("--jail", choices=("bwrap", "none"), default="bwrap")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also time the patchgate package in DIR/patchgate (e.g. an older commit's tasks/)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep the environment's bytecode setting (may compile every run)",
    )
    args = parser.parse_args()
    k = args.k or (3 if args.quick else 5)
    base = scratch_dir(args.fs)
    started = time.perf_counter()
    bytecode = "as the environment has it"
    if not args.no_bytecode_cache:
        was_off = cache_bytecode(base / "pycache")
        bytecode = "cached" + (" (PYTHONDONTWRITEBYTECODE=1 dropped)" if was_off else "")
    print(f"generating a repository of {args.files} files in {base} ...", file=sys.stderr)
    try:
        bench = make_project(args.files, base, gates=DEFAULT_GATES, jail=args.jail)
        hand = Hand(bench, args.jail)
        versions = itertools.count()
        codes: dict[str, str | None] = {"": None}
        if args.baseline:  # the same project and workspace: only the code differs
            codes = {" (this code)": None, " (--baseline)": os.path.abspath(args.baseline)}
        # Warm all: the workspace and worktree exist, mypy's caches are filled, bytecode too.
        warm: list[tuple[Callable[[], object], Callable[[], None]]] = [
            (functools.partial(hand.write, version(next(versions))), hand.run)
        ]
        for code in codes.values():
            text = edit_script(EDITED, version(next(versions)))
            edit: Callable[[], object] = functools.partial(bench.patch, "edit.py", text)
            warm.append((edit, functools.partial(verify, bench, "patches/edit.py", code=code)))
        for edit, fn in warm:
            edit()
            start = time.perf_counter()
            fn()
            print(f"  warm-up: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        reverify(bench, hand, k, versions, codes)
        after_mypy_error(bench, hand, k, versions, codes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"re-verify vs a hand script: {args.files} files on {args.fs}, jail {args.jail} (both), "
        f"median of {k} (interleaved), bytecode {bytecode}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(table(rows, ("measure", "value", "reference", "ratio", "aim")))


if __name__ == "__main__":
    main()

"""doit demo: the lifecycle on an embedded demo repository, built from the files in demo/."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from . import git, report
from .errors import PatchgateError
from .steps import step

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(PACKAGE_DIR)
# Installed: patchgate/demo/ (package data); in the source tree: demo/ beside tasks/.
DEMO_SOURCE = next(
    (
        d
        for d in (os.path.join(PACKAGE_DIR, "demo"), os.path.join(PROJECT_DIR, "demo"))
        if os.path.isdir(d)
    ),
    os.path.join(PROJECT_DIR, "demo"),
)
DEMO_DIR = os.path.join("build", "demo")


def build_demo(target: str) -> None:
    """A fresh demo project: live repository (one commit), a bare remote, patches, config."""
    if os.path.exists(target):
        shutil.rmtree(target)
    os.makedirs(target)
    live = os.path.join(target, "live")
    shutil.copytree(os.path.join(DEMO_SOURCE, "live"), live)
    shutil.copytree(os.path.join(DEMO_SOURCE, "patches"), os.path.join(target, "patches"))
    shutil.copy(os.path.join(DEMO_SOURCE, "patchgate.yaml"), target)
    remote = os.path.join(target, "remote.git")
    git.init_bare(remote, "main")
    maintainer = ("Demo Maintainer", "maintainer@demo.invalid")
    git.publish_first_commit(live, remote, "main", maintainer, "calc: first version", "DEMO")


def command() -> list[str]:
    """patchgate's commands as this interpreter runs them (`python -m patchgate`, the same
    doit tasks as the demo project's own `doit`): no dodo.py needed, installed or not."""
    return [sys.executable, "-m", "patchgate"]


def patchgate(project: str, *args: str) -> int:
    """Run one patchgate command on the demo project, output straight to the console."""
    print(f"\n$ doit {' '.join(shlex.quote(a) for a in args)}", flush=True)
    return subprocess.run([*command(), *args], cwd=project, check=False).returncode


def patchgate_output(project: str, *args: str) -> tuple[int, str]:
    """Run one patchgate command on the demo project: exit status and output (also shown)."""
    print(f"\n$ doit {' '.join(shlex.quote(a) for a in args)}", flush=True)
    done = subprocess.run(
        [*command(), *args], cwd=project, check=False, capture_output=True, text=True
    )
    print(done.stdout + done.stderr, end="", flush=True)
    return done.returncode, done.stdout + done.stderr


REASON = "reason=CI went red after the landing"


def confirm_command(output: str) -> list[str]:
    """The arguments of the CONFIRM line a rollback plan printed, for the demo's operator."""
    found = re.search(
        r"^\s*CONFIRM: doit rollback (sha=[0-9a-f]+) (confirm=[0-9a-f]+) ", output, re.M
    )
    if not found:
        raise PatchgateError("DEMO", "the rollback plan printed no CONFIRM line; see above")
    return ["rollback", found.group(1), found.group(2), "operator=demo-operator", REASON]


def run_expecting(project: str, args: tuple[str, ...], want: int, log: str) -> None:
    """Run one command; a success or a failure, as ``want`` (0: success) says."""
    code = patchgate(project, *args)
    report.log(log, f"demo: doit {' '.join(args)} -> exit {code}")
    if (code == 0) != (want == 0):
        raise PatchgateError(
            "DEMO",
            f"doit {' '.join(args)} exited {code}, expected "
            f"{'success' if want == 0 else 'a failure'}; see the output above",
        )


def run_demo(root: str, log: str) -> dict[str, Any]:
    project = os.path.join(root, DEMO_DIR)
    build_demo(project)
    report.log(log, f"demo: built {project}")
    expected = [
        (("verify", "patch=patches/good_mean_empty.py"), 0),
        (("verify", "patch=patches/bad_add_str.py"), 1),
    ]
    for args, want in expected:
        run_expecting(project, args, want, log)
    live, remote = os.path.join(project, "live"), os.path.join(project, "remote.git")
    parent = git.head(live)
    # issue 15: a landing goes red on a fake forge, watch proposes, the operator confirms
    from .forge_demo import TRIGGER, DemoForge, watch_and_rollback

    with DemoForge(project) as fake:
        promote = ("promote", "issue=good_mean_empty", "message=calc: mean() of nothing is 0.0")
        run_expecting(project, (*promote, TRIGGER), 0, log)
        landed, pushed = git.head(live), git.rev_parse(remote, "main")
        if landed != pushed:
            raise PatchgateError(
                "DEMO",
                f"the promotion was not pushed: live is at {landed[:12]}, "
                f"the demo remote at {pushed[:12]}; see the output above",
            )
        report.log(log, f"demo: promoted and pushed {landed}")
        reverted = watch_and_rollback(project, fake, landed, parent, log)
    if git.rev_parse(remote, "main") != reverted:
        raise PatchgateError(
            "DEMO", f"the rollback {reverted[:12]} was not pushed; see the output above"
        )
    report.log(log, f"demo: rolled back {landed[:12]} in {reverted}, audit passed")
    # issue 14: a model proposes (fails mypy), refines, passes; the operator promotes it
    from .propose_demo import demo_propose

    proposed = demo_propose(project, log)
    report.log(log, f"demo: proposed, refined and promoted {proposed}")
    return {
        "summary": {
            "RESULT": "SUCCESS",
            "COMMIT": landed,
            "PUSH": "OK",
            "ROLLBACK": reverted,
            "PROPOSED": proposed,
            "DEMO": os.path.relpath(project, root),
        }
    }


def task_demo() -> Iterator[dict[str, Any]]:
    """Run the lifecycle on an embedded demo repository (built fresh in build/demo/)."""
    root = os.getcwd()
    yield step(
        "demo",
        "run",
        run_demo,
        [root, report.log_path(root, "demo")],
        root=root,
        log=report.log_path(root, "demo"),
        stage="DEMO",
        doc="the embedded demo",
        uptodate=[False],
    )

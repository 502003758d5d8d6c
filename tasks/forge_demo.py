"""The demo's forge story (issue 15): a landing goes red on a fake GitHub, ``doit watch``
proposes the rollback with its CONFIRM line, the operator runs it, the forge is annotated.

``DemoForge(project)`` starts tasks/fakegithub.py's server on 127.0.0.1 (a free port) for
repository ``demo/calc`` with issue #1, points the project's ``forge:`` at it and, on leaving,
stops the server and takes the ``forge:`` section out again (nothing is left running, and the
built demo does not point at a dead port). Inside it the demo promotes with ``trigger=github:1``
and ``watch_and_rollback`` plays CI: the parent green, the landed commit red, then red again
on a re-run (the confirmation); between them ``doit watch once=1`` says "suspect", then
proposes. The demo confirms with the proposal's own CONFIRM line and prints the issue's
comment as the forge shows it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import TracebackType

from . import demo, git, report
from .errors import PatchgateError
from .fakegithub import FakeGitHub, load_spec

ISSUE = 1
TRIGGER = f"trigger=github:{ISSUE}"
CHECK = "integration"
FAILING = {
    "path": "tests/test_report.py",
    "start_line": 8,
    "title": "test_report_of_no_data: ZeroDivisionError not raised",
    "message": "report() relied on mean([]) raising",
}
# GitHub-shaped answers when the OpenAPI subset is at hand (the source tree); else the fields
# patchgate reads (an installed package has no tests/).
SPEC = Path(demo.PROJECT_DIR) / "tests" / "data" / "gh-subset.json"
SECTION = re.compile(r"(?ms)^(forge|watch):.*?(?=^\S|\Z)")


def configure(project: str, url: str | None) -> None:
    """The demo project's forge: and watch: sections: the fake at ``url``, or none."""
    path = os.path.join(project, "patchgate.yaml")
    with open(path, encoding="utf-8") as fh:
        text = SECTION.sub("", fh.read())
    if url is not None:
        text += (
            f"forge:\n  repository: demo/calc\n  api_url: {url}\n"
            "  token_env: PATCHGATE_DEMO_FORGE_TOKEN\n  retries: 0\n  backoff: 0\n"
            '  tag_on_rollback: ["@demo/maintainers"]\n'
            "watch:\n  reruns: 2\n  interval: 0\n"
        )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


class DemoForge:
    """The fake GitHub of the demo, configured in the project while the block runs."""

    def __init__(self, project: str) -> None:
        self.project = project
        spec = load_spec(SPEC) if SPEC.is_file() else None
        remote = Path(project) / "remote.git"
        self.fake = FakeGitHub("demo", "calc", remote=remote, spec=spec)

    def __enter__(self) -> FakeGitHub:
        self.fake.start()
        self.fake.add_issue(ISSUE, "mean() of an empty list raises ZeroDivisionError")
        configure(self.project, self.fake.url)
        print(f"\n(demo: a fake GitHub for demo/calc serves {self.fake.url}; issue #{ISSUE})")
        return self.fake

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.fake.stop()
        configure(self.project, None)


def comment_lines(fake: FakeGitHub, number: int) -> list[str]:
    """The comments of issue ``number`` as the forge shows them (hidden markers left out)."""
    lines = []
    for comment in fake.comments.get(number, []):
        lines.append(f"--- comment by {comment['user']['login']} on #{number}")
        lines += [f"  {line}" for line in str(comment["body"]).splitlines() if "<!--" not in line]
    return lines


def watch(project: str, log: str) -> str:
    code, output = demo.patchgate_output(project, "watch", "once=1")
    report.log(log, f"demo: doit watch once=1 -> exit {code}")
    if code != 0:
        raise PatchgateError("DEMO", f"doit watch once=1 exited {code}; see the output above")
    return output


def watch_and_rollback(project: str, fake: FakeGitHub, landed: str, parent: str, log: str) -> str:
    """CI goes red on ``landed``; watch proposes; the operator confirms: the revert commit."""
    fake.add_check_run(parent, CHECK, "success")
    fake.add_check_run(landed, CHECK, "failure", annotations=[FAILING])
    print(f"\n(demo: CI on the forge: {CHECK} green on {parent[:12]}, red on {landed[:12]})")
    output = watch(project, log)
    if "suspect" not in output:
        raise PatchgateError(
            "DEMO", "one red run was expected to be only a suspect; see doit watch above"
        )
    fake.add_check_run(landed, CHECK, "failure", annotations=[FAILING])
    print(f"\n(demo: CI re-ran {CHECK} on {landed[:12]}: red again, the confirmation)")
    output = watch(project, log)
    if "ROLLBACK PROPOSED" not in output:
        raise PatchgateError("DEMO", "doit watch proposed no rollback; see the output above")
    print(f"\n(demo: the forge's issue #{ISSUE} now reads)")
    print("\n".join(comment_lines(fake, ISSUE)), flush=True)
    args = demo.confirm_command(output)
    for command in (args, ["audit"]):
        code = demo.patchgate(project, *command)
        report.log(log, f"demo: doit {' '.join(command)} -> exit {code}")
        if code != 0:
            raise PatchgateError(
                "DEMO", f"doit {' '.join(command[:2])} exited {code}; see the output above"
            )
    print(f"\n(demo: the forge's issue #{ISSUE} now reads)")
    print("\n".join(comment_lines(fake, ISSUE)), flush=True)
    return git.head(os.path.join(project, "live"))

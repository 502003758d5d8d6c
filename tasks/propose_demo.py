"""The demo's propose → fail → refine → pass → promote cycle, against the embedded fake model.

``demo_propose(project, log)`` runs on a demo project built by ``demo.build_demo``: it starts
tasks/fakellm.py's OpenAI-compatible server on 127.0.0.1 with two scripted replies (a ``mul``
without type annotations, which mypy refuses; then the annotated one), points the project's
``llm:`` at it, runs ``doit propose`` and then ``doit promote`` as an operator would, and stops
the server. It returns the promoted commit.
"""

from __future__ import annotations

import difflib
import os
import re

from . import demo, git, report
from .errors import PatchgateError
from .fakellm import FakeLLM, Step

ISSUE = "demo_mul"
REQUEST = "add mul(a, b) to calc/ops.py, with a test in tests/test_ops.py"
FILES = ("calc/ops.py", "tests/test_ops.py")
UNTYPED = "\n\ndef mul(a, b):\n    return a * b\n"
TYPED = "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
TEST = "\n\ndef test_mul() -> None:\n    assert mul(2, 3) == 6\n"


def unified(path: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(lines)


def proposal(live: str, mul: str, score: float, why: str) -> Step:
    with open(os.path.join(live, FILES[0]), encoding="utf-8") as fh:
        ops = fh.read()
    with open(os.path.join(live, FILES[1]), encoding="utf-8") as fh:
        tests = fh.read()
    new_tests = re.sub(r"^(from calc\.ops import .*)$", r"\1, mul", tests, count=1, flags=re.M)
    patch = unified(FILES[0], ops, ops + mul) + unified(FILES[1], tests, new_tests + TEST)
    return Step.reply(
        {
            "patch": patch,
            "affected_files": list(FILES),
            "explanation": why,
            "confidence_score": score,
            "test_commands": [],
        }
    )


def point_at(project: str, endpoint: str) -> None:
    """The demo project's llm: section: the fake server, no waiting between transport retries."""
    path = os.path.join(project, "patchgate.yaml")
    with open(path, encoding="utf-8") as fh:
        text = re.sub(r"(?ms)^llm:.*?(?=^\S|\Z)", "", fh.read())
    text += (
        f"llm:\n  endpoint: {endpoint}\n  model: demo-model\n  backoff_seconds: 0\n"
        "  response_format: auto\n"
    )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def demo_propose(project: str, log: str) -> str:
    """Propose (fail at mypy, refine, pass), then promote as the operator: the new commit."""
    live = os.path.join(project, "live")
    with FakeLLM(model="demo-model") as fake:
        fake.script(
            proposal(live, UNTYPED, 0.6, "mul, the obvious way"),
            proposal(live, TYPED, 0.9, "mul with the annotations mypy --strict wants"),
        )
        point_at(project, fake.endpoint)
        code, output = demo.patchgate_output(
            project, "propose", f"issue={ISSUE}", f"request={REQUEST}", "trigger=doit demo"
        )
        report.log(log, f"demo: doit propose issue={ISSUE} -> exit {code}")
        if code != 0 or "\nPROMOTE: doit promote issue=" not in output:
            raise PatchgateError("DEMO", f"doit propose issue={ISSUE} exited {code}; see above")
        if "GATES" not in output:
            raise PatchgateError(
                "DEMO", "the first proposal was expected to fail a gate; see above"
            )
    code = demo.patchgate(project, "promote", f"issue={ISSUE}", "message=calc: mul()")
    report.log(log, f"demo: doit promote issue={ISSUE} -> exit {code}")
    if code != 0:
        raise PatchgateError("DEMO", f"doit promote issue={ISSUE} exited {code}; see above")
    return git.head(live)

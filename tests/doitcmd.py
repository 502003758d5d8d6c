"""The one doit command line of the tests and the benches: patchgate run as users run it.

    from doitcmd import doit_argv             # in tests/ (pytest puts tests/ on sys.path)
    from tests.doitcmd import doit_argv       # in bench/ (the repository root on sys.path)

``doit_argv(project, "verify", "patch=...")`` is ``python -m doit -f <checkout>/dodo.py -d
<project> verify patch=...`` with this interpreter: the checkout's dodo.py, the project folder
(which holds patchgate.yaml and patches/) as doit's working folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DODO = ROOT / "dodo.py"


def doit_argv(project: Path | str, *args: str) -> list[str]:
    """The argv of ``doit ARGS`` run in the patchgate project folder ``project``."""
    return [sys.executable, "-m", "doit", "-f", str(DODO), "-d", str(project), *args]

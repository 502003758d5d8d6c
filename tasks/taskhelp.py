"""`doit help TASK` that shows the task's whole documentation, variables included.

doit's own help prints a task's first doc line and its command-line options. patchgate's tasks
take variables instead (`patch=P issue=ID`), documented in their creators' docstrings, so this
command prints the docstring whole. pyproject.toml registers it as doit's `help` command
(entry point group `doit.COMMAND`); `doit help` without a task is doit's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from doit.cmd_help import Help


class TaskHelp(Help):  # type: ignore[misc]  # doit has no type hints
    def _execute(self, pos_args: Sequence[str]) -> bool:
        creator = self.loader.namespace.get(f"task_{pos_args[0]}")
        doc = inspect.getdoc(creator) if callable(creator) else None
        if not doc:
            return bool(super()._execute(pos_args))  # a subtask, or a task without a creator
        print(f"{pos_args[0]}  {doc}")
        return True

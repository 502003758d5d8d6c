"""Every patchgate command as a doit task creator, plus doit's configuration.

A project's ``dodo.py`` is one line, ``from patchgate.dodo import *``: doit then finds the
``task_*`` creators and ``DOIT_CONFIG`` here.
"""

from __future__ import annotations

import os

from .audit import task_audit, task_history, task_record
from .demo import task_demo
from .finalize import task__finalize, task_finalize
from .journal import task__recover
from .promote import task__promote, task_promote
from .propose import task_propose  # issue 14
from .rollback import task__rollback, task_rollback
from .status import task_config, task_status
from .steps import DEP_FILE, DOIT_CONFIG
from .ui.command import task_ui  # issue 16: the operator console
from .verify import task__verify, task_verify
from .watch import task_watch  # issue 15

__all__ = [
    "DOIT_CONFIG",
    "task__finalize",
    "task__promote",
    "task__recover",
    "task__rollback",
    "task__verify",
    "task_audit",
    "task_config",
    "task_demo",
    "task_finalize",
    "task_history",
    "task_promote",
    "task_propose",
    "task_record",
    "task_rollback",
    "task_status",
    "task_ui",
    "task_verify",
    "task_watch",
]

# doit opens its state file before any task runs; its folder must already exist.
os.makedirs(os.path.dirname(DEP_FILE), exist_ok=True)

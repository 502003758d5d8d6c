"""patchgate: `doit list` shows the commands; DESIGN and README say what each one does."""

import os

from tasks.audit import task_audit, task_history, task_record  # noqa: F401
from tasks.demo import task_demo  # noqa: F401
from tasks.finalize import task_finalize  # noqa: F401
from tasks.promote import task_promote  # noqa: F401
from tasks.rollback import task_rollback  # noqa: F401
from tasks.status import task_config, task_status  # noqa: F401
from tasks.steps import DEP_FILE, DOIT_CONFIG  # noqa: F401
from tasks.verify import task_verify  # noqa: F401

# doit opens its state file before any task runs; its folder must already exist.
os.makedirs(os.path.dirname(DEP_FILE), exist_ok=True)

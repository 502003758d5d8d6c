"""Kill points for crash tests: ``point(name)`` SIGKILLs this process when PATCHGATE_FAULT names it.

A crash test sets ``PATCHGATE_FAULT=promote-copied`` (a comma-separated list is allowed) and runs
a command as users do; at that point the process dies with no cleanup of any kind, exactly like
``kill -9`` or a power cut between two writes. Unset, a point costs one environment lookup.

Points in use (grep ``faults.point``): promote-copied, promote-committed, finalize-copied,
finalize-committed.
"""

from __future__ import annotations

import os
import signal

ENV = "PATCHGATE_FAULT"


def point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted and name in (w.strip() for w in wanted.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)

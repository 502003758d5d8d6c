"""Kill points for crash tests: ``point(name)`` SIGKILLs this process when PATCHGATE_FAULT names it.

A crash test sets ``PATCHGATE_FAULT=promote-copied`` (a comma-separated list is allowed) and runs
a command as users do; at that point the process dies with no cleanup of any kind, exactly like
``kill -9`` or a power cut between two writes. Unset, a point costs one environment lookup.
Children already started (a git command) run on to their end, as they would after a real kill.

Points (grep ``faults.point``; KIND is promote, finalize or any other lifecycle that lands
through ``promote.land_changes``; TASK is a doit task name such as ``verify:ID-apply``):

* every step: ``step-before:TASK``, ``step-after:TASK`` (steps.run_step);
* workspace: ``workspace-added`` (worktree made, meta.json not yet written);
* apply: ``apply-ran`` (the patch changed the worktree, nothing recorded yet);
* gates: ``gate-ran:NAME`` (the gate ran, its record not yet written);
* verify: ``verify-result-written`` (result.json written, its provenance event not yet);
* any JSON state file: ``json-tmp:BASENAME`` (temporary file complete, not yet renamed);
* zips: ``zip-writing:BASENAME`` (half the entries written to the temporary file);
* provenance: ``provenance-torn`` (half an event line written and synced: a torn line);
* landing: ``KIND-journaled`` (journal written, live untouched), ``put-tmp:PATH`` (a file's
  temporary copy written next to it, not yet renamed), ``KIND-put:PATH`` (that path replaced,
  the next ones not yet), ``KIND-copied``, ``KIND-commit-made`` (commit object made, branch not
  moved), ``KIND-ref-moved`` (branch moved, journal still says copying), ``KIND-committed``;
* recovery: ``recover-undone`` (live restored, journal not yet removed);
* promote's finish: ``promote-archived``, ``promote-filed`` (patch moved to successful/),
  ``promote-recorded`` (apply event written), ``promote-worktree-removed`` (worktree gone,
  workspace folder not yet).
"""

from __future__ import annotations

import os
import signal

ENV = "PATCHGATE_FAULT"


def armed(name: str) -> bool:
    """Whether PATCHGATE_FAULT names ``name`` (for points that must prepare a torn write)."""
    wanted = os.environ.get(ENV)
    return wanted is not None and name in (w.strip() for w in wanted.split(","))


def point(name: str) -> None:
    if armed(name):
        os.kill(os.getpid(), signal.SIGKILL)

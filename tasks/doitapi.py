"""The two places patchgate reaches past doit's public API, kept here so they are seen together.

doit tells a task creator its ``name=value`` variables one at a time (``get_var``), and nothing
about which tasks the command line asks for. patchgate needs both:

* ``command_line()``: every variable given, to refuse an unknown one before any work starts
  (``get_var`` cannot list them): doit keeps them in ``doit_cmd._CMDLINE_VARS``.
* ``requested(basename)``: whether this run executes ``basename``. A landing takes the
  promotion lock, recovers and fetches while its tasks are planned (the verify chain it depends
  on must be planned against the HEAD it lands on); ``doit list`` or another command must not.
  The task names are a local of ``doit.loader.load_tasks``, on the stack while creators run.

Both are pinned to doit 0.37 (pyproject.toml); a test runs each path.
"""

from __future__ import annotations

import sys

from doit import doit_cmd


def command_line() -> dict[str, str]:
    """Every ``name=value`` variable of this doit command line."""
    return dict(doit_cmd._CMDLINE_VARS or {})


def requested(basename: str) -> bool:
    """Whether this doit command runs task ``basename`` (or one of its subtasks).

    Commands that only list tasks never count (``allow_delayed`` is False for them).
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "load_tasks" and frame.f_globals.get("__name__") == "doit.loader":
            names = frame.f_locals.get("args") or ()
            runs = bool(frame.f_locals.get("allow_delayed"))
            return runs and any(
                isinstance(n, str) and (n == basename or n.startswith(basename + ":"))
                for n in names
            )
        frame = frame.f_back  # type: ignore[assignment]
    return False

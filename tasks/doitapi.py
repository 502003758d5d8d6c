"""The one place patchgate reaches past doit's public API, kept here so it is seen.

doit tells a task creator its ``name=value`` variables one at a time (``get_var``), and cannot
list them. patchgate needs them all:

* ``command_line()``: every variable given, to refuse an unknown one before any work starts
  (a typo such as ``isue=7`` must not be ignored), and to pass a command's variables on
  (``propose``, ``audit``). doit keeps them in ``doit_cmd._CMDLINE_VARS``.

Which tasks a command runs is no longer asked of doit: a command's load-time work is the action
of a hidden setup task, and its creator is created after it (``doit.create_after``; see
``patchgate.prepare``). This is pinned to doit 0.37 (pyproject.toml); a test runs it.
"""

from __future__ import annotations

from doit import doit_cmd


def command_line() -> dict[str, str]:
    """Every ``name=value`` variable of this doit command line."""
    return dict(doit_cmd._CMDLINE_VARS or {})

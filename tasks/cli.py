"""The `patchgate` command: patchgate's doit tasks in the current folder, and `patchgate init`.

`patchgate verify patch=X` is `doit verify patch=X` without a dodo.py: doit runs the task
creators of patchgate.dodo (ModuleTaskLoader) in the folder it is started in, which holds
patchgate.yaml. `patchgate init` sets patchgate up in an existing repository (init.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["init"]:
        from .init import main as init_main

        return init_main(args[1:])
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import dodo

    code: int = DoitMain(ModuleTaskLoader(dodo)).run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`python -m patchgate ARGS`: the `patchgate` command (cli.py)."""

import sys

from .cli import main

sys.exit(main())

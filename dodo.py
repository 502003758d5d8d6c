"""patchgate's commands for this project: `doit list` shows them, docs/ says what each does."""

from patchgate.dodo import *  # noqa: F403

"""patchgate: verify, promote, audit and roll back code patches as doit tasks."""

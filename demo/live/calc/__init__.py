"""A tiny calculator: the repository the demo patches."""

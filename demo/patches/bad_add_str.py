"""Demo patch that should be refused: add() now returns a string, and mypy says so."""

from pathlib import Path

FILES = ["calc/ops.py"]

ops = Path("calc/ops.py")
ops.write_text(ops.read_text().replace("    return a + b", "    return str(a + b)"))

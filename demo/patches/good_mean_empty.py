"""Demo patch: mean() of an empty list returns 0.0 instead of dividing by zero."""

from pathlib import Path

FILES = ["calc/ops.py", "tests/test_ops.py"]

ops = Path("calc/ops.py")
ops.write_text(
    ops.read_text().replace(
        "    return sum(values) / len(values)",
        "    if not values:\n        return 0.0\n    return sum(values) / len(values)",
    )
)
tests = Path("tests/test_ops.py")
tests.write_text(
    tests.read_text() + "\n\ndef test_mean_of_nothing() -> None:\n    assert mean([]) == 0.0\n"
)

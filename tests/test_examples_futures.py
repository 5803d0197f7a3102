"""The futures examples run as scripts (real worker processes) and print their result."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("name, expected", [
    ("dynamic_reduction.py", "total = 32640"),
    ("fib.py", "fib(15) = 610"),
])
def test_example_runs(name, expected):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout

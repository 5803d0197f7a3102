import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("name", ["quickstart.py"])
def test_example_runs(name):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "z = 5" in out.stdout


@pytest.mark.timeout(150)
def test_memory_example_spills_and_sums():
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "memory_spill.py")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sum of 1 GiB of partitions" in out.stdout
    spilled = [float(line.split("MiB on disk")[0].rsplit(", ", 1)[1]) for line in out.stdout.splitlines()
               if "on disk" in line]
    assert len(spilled) == 2 and sum(spilled) > 400  # 1 GiB held by two 256 MiB workers: most left memory

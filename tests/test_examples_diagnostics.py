import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def test_performance_report_example(tmp_path):
    path = tmp_path / "report.html"
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "performance_report.py"), str(path)],
                         capture_output=True, text=True, timeout=60,
                         # this checkout's actorrt, not whichever one is installed
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr
    assert "task runs: combine 1, load 20, process 20" in out.stdout
    page = path.read_text()
    assert page.count('<rect class="run"') >= 41 and "<svg" in page

import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def test_profile_example_writes_a_flame_graph(tmp_path):
    page = tmp_path / "profile.html"
    # (This checkout's actorrt first, whatever is installed.)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "profile_flamegraph.py"), str(page)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "primes below 400,000: 33860" in out.stdout and "count_primes" in out.stdout
    html = page.read_text()
    assert "<svg" in html and "count_primes" in html and "is_prime" in html

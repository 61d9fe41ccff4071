"""The examples run end to end on the embedded models (each in well under a minute)."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


#: Each example and a line its output must contain.
EXPECTED = {"drop_in_defence.py": "PGD-10 robust accuracy", "aligned_evaluation.py": "aligned: clean",
            "compression_rate.py": "compression rate", "quick_start.py": "characters of JSON"}


def test_every_example_is_run():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EXPECTED[script] in proc.stdout, proc.stdout[-2000:]
    if script == "quick_start.py":
        assert "overall: pass" in proc.stdout or "overall: warn" in proc.stdout

"""The examples run end to end on the embedded models (each in well under a minute)."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("script", ["drop_in_defence.py", "aligned_evaluation.py", "compression_rate.py"])
def test_example_runs(script):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%" in proc.stdout or "compression rate" in proc.stdout

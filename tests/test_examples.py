"""The examples run end to end on the embedded models (each in well under a minute)."""
import os
import runpy
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


#: Each example and a line its output must contain.
EXPECTED = {"drop_in_defence.py": "PGD-10 robust accuracy", "aligned_evaluation.py": "aligned: clean",
            "compression_rate.py": "compression rate", "quick_start.py": "characters of JSON"}


def test_every_example_is_run():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, capsys, monkeypatch):
    """Each example as ``python examples/SCRIPT`` runs it (in this process: a second interpreter would only add its
    start-up to the default test run)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", [os.path.join(EXAMPLES, script)])
    runpy.run_path(os.path.join(EXAMPLES, script), run_name="__main__")
    out = capsys.readouterr().out
    assert EXPECTED[script] in out, out[-2000:]
    if script == "quick_start.py":
        assert "overall: pass" in out or "overall: warn" in out

"""The README cannot drift from the code.

Every python code block of README.md carries a marker on the line before it: ``<!-- readme-test: quick-start ... -->``
(must equal ``examples/quick_start.py`` between its markers; tests/test_examples.py runs that file),
``<!-- readme-test: offline -->`` (executed here, offline) or ``<!-- readme-test: needs-weights -->`` (needs network,
weights or a GPU: compiled only). The install instructions it gives are checked against setup.cfg and the loader.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
QUICK_START = os.path.join(ROOT, "examples", "quick_start.py")
KINDS = ("quick-start", "offline", "needs-weights")
BLOCK = re.compile(r"^(?P<marker>[^\n]*)\n```python\n(?P<code>.*?)^```$", re.S | re.M)
MARKER = re.compile(r"<!-- readme-test: (?P<kind>[a-z-]+)[^>]*-->")


def python_blocks() -> list[tuple[str | None, str, int]]:
    """``(kind or None, code, line)`` of every python block of the README."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    blocks = []
    for m in BLOCK.finditer("\n" + text):
        marker = MARKER.fullmatch(m.group("marker").strip())
        blocks.append((marker.group("kind") if marker else None, m.group("code"), text[:m.start()].count("\n") + 1))
    return blocks


def blocks_of(kind: str) -> list[str]:
    return [code for k, code, _ in python_blocks() if k == kind]


def quick_start_body() -> str:
    with open(QUICK_START, encoding="utf-8") as f:
        text = f.read()
    return text.split("# quick start: begin\n", 1)[1].split("# quick start: end\n", 1)[0]


def test_every_python_block_is_marked():
    blocks = python_blocks()
    assert len(blocks) >= 4
    unmarked = [line for kind, _, line in blocks if kind not in KINDS]
    assert not unmarked, f"README python blocks without a known readme-test marker at lines {unmarked}"
    assert len(blocks_of("quick-start")) == 1 and blocks_of("offline")


def test_quick_start_block_is_the_example():
    assert blocks_of("quick-start")[0] == quick_start_body()


def test_quick_start_comes_first():
    with open(README, encoding="utf-8") as f:
        sections = [line for line in f if line.startswith("## ")]
    assert sections[0].startswith("## Quick start")


@pytest.mark.parametrize("index", range(len(blocks_of("offline"))))
def test_offline_block_runs(index, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(blocks_of("offline")[index])
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("index", range(len(blocks_of("needs-weights"))))
def test_weights_block_compiles(index):
    compile(blocks_of("needs-weights")[index], f"README needs-weights block {index}", "exec")


def extras() -> dict[str, set[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    section = cfg["options.extras_require"]
    return {name: {line.strip() for line in section[name].splitlines() if line.strip()} for name in section}


def test_all_extra_is_everything_and_core_has_no_robustbench():
    found = extras()
    assert {"robustbench", "test", "all"} <= set(found)
    for name, requirements in found.items():
        assert requirements <= found["all"], name
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    core = cfg["options"]["install_requires"]
    assert "robustbench" not in core and "setuptools" not in core and "torchvision" not in core


def test_missing_robustbench_names_the_extra(monkeypatch, tmp_path):
    from art_diffpure.models import robustbench as rb

    with open(README, encoding="utf-8") as f:
        assert rb.INSTALL_HINT in f.read()  # the README names the same command
    absent = ("robustbench", "autoattack", "pyautoattack")
    for name in [m for m in sys.modules if m.split(".")[0] in absent]:
        monkeypatch.delitem(sys.modules, name)  # restored afterwards
    for name in absent:
        monkeypatch.setitem(sys.modules, name, None)  # None: import and find_spec see the module as missing
    with pytest.raises(ImportError, match=re.escape(rb.INSTALL_HINT)):
        rb.import_robustbench()
    with pytest.raises(ImportError, match=re.escape(rb.INSTALL_HINT)):  # before any checkpoint lookup
        rb.robustbench_art_classifier("Standard", model_dir=str(tmp_path), device_type="cpu")


def readme_lines() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return f.read().splitlines()


MEASURED_PERCENT = re.compile(r"\d+\.\d%")


def test_every_measured_percentage_names_its_n():
    """A measured accuracy (one decimal, e.g. 45.1%) stands with its n: on its line, or in its table's header."""
    lines, header, missing = readme_lines(), "", []
    for number, line in enumerate(lines, 1):
        if line.startswith("|") and (number == 1 or not lines[number - 2].startswith("|")):
            header = line  # the first row of a table
        elif not line.startswith("|"):
            header = ""
        if MEASURED_PERCENT.search(line) and not re.search(r"n = \d|\d images", line + header):
            missing.append(number)
    assert not missing, f"README lines with a measured percentage but no n: {missing}"


def law_verdicts(report: str) -> dict[str, str]:
    with open(os.path.join(ROOT, "docs", report, "results.json"), encoding="utf-8") as f:
        return {law["law"]: law["verdict"] for law in json.load(f)["laws"]}


def test_readme_verdicts_are_the_reports_word_for_word():
    """Both README law tables say what the committed reports' results.json say, word for word."""
    exploratory, confirmatory = law_verdicts("digits-report"), law_verdicts("digits-report-confirmatory")

    def verdict(cell: str) -> str:  # "**holds** (note)" -> "holds"
        return re.sub(r"\s*\(.*\)$", "", cell.strip()).strip("*")

    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in readme_lines() if re.match(r"\| C[1-7] ", line)]
    side_by_side = [row for row in rows if verdict(row[1]) in VERDICTS]
    exploratory_table = [row for row in rows if verdict(row[1]) not in VERDICTS]
    assert len(side_by_side) == len(exploratory_table) == 7
    for law, left, right in side_by_side:
        assert (verdict(left), verdict(right)) == (exploratory[law[:2]], confirmatory[law[:2]]), law
    for law, _, right in exploratory_table:
        assert verdict(right) == exploratory[law[:2]], law


VERDICTS = ("holds", "does not hold", "inconclusive at this n")

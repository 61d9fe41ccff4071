"""No test may skip or xfail for any reason but missing CUDA hardware: every skip goes through
``conftest.requires_gpus``, which states how many GPUs the test needs and how many this machine has."""
import os
import re

from conftest import N_GPUS, requires_gpus

TESTS = os.path.dirname(os.path.abspath(__file__))
FORBIDDEN = re.compile(r"pytest\.(mark\.skip|mark\.skipif|mark\.xfail|skip\(|xfail\(|importorskip\()")


def test_no_skip_or_xfail_outside_the_gpu_rule():
    offenders = []
    for folder, _, files in os.walk(TESTS):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path in (os.path.join(TESTS, "conftest.py"), os.path.abspath(__file__)):
                continue
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if FORBIDDEN.search(line):
                        offenders.append(f"{os.path.relpath(path, TESTS)}:{number}: {line.strip()}")
    assert not offenders, "skips/xfails outside conftest.requires_gpus:\n" + "\n".join(offenders)


def test_the_gpu_rule_marks_cuda_and_skips_only_without_enough_gpus():
    def probe():
        pass

    marked = requires_gpus(N_GPUS + 1)(probe)
    marks = {m.name: m for m in marked.pytestmark}
    assert "cuda" in marks and marks["skipif"].args == (True,)
    assert f"needs {N_GPUS + 1} CUDA GPU" in marks["skipif"].kwargs["reason"]
    assert f"this machine has {N_GPUS}" in marks["skipif"].kwargs["reason"]
    def other():
        pass

    enough = {m.name: m for m in requires_gpus(0)(other).pytestmark}
    assert enough["skipif"].args == (False,)  # with the hardware present, the test runs


def test_the_guard_recognises_skips():
    for line in ("@pytest.mark.skip(reason='not implemented')", "pytest.skip('later')", "@pytest.mark.xfail",
                 "torchvision = pytest.importorskip('torchvision')", "@pytest.mark.skipif(True, reason='x')"):
        assert FORBIDDEN.search(line), line
    assert not FORBIDDEN.search("@requires_gpus(2)")

"""The masking report's opt-in attacks built for purification (``art-diffpure masking --purification-attacks``):
their parts, checks and worst case at smoke size, and the default plan and the committed report left as they are."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from _evaluation_models import _one_thread, tiny_masking_kwargs  # noqa: F401  (autouse fixture)

from art_diffpure.reproduce import masking as masking_report

PURIFICATION = ("diffhammer", "diffattack", "surrogate-pgd-eot")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The plan of the committed reports (eps 0.2, Square 1000, 5 restarts): their parts' fingerprints hold it.
DEFAULT_PLAN = [
    ("transfer", {"max_iter": 40, "eps": 0.2}), ("bpda", {"max_iter": 40, "eps": 0.2}),
    ("pgd10", {"max_iter": 10, "eps": 0.2}), ("pgd40", {"max_iter": 40, "eps": 0.2}),
    ("pgd100", {"max_iter": 100, "eps": 0.2}), ("pgd200", {"max_iter": 200, "eps": 0.2}),
    ("large_eps", {"max_iter": 40, "eps": 1.0}), ("restarts5", {"max_iter": 40, "restarts": 5, "eps": 0.2}),
    ("apgd_ce_dlr", {"max_iter": 100, "eps": 0.2}), ("square1000", {"queries": 1000, "eps": 0.2}),
    ("autoattack_rand_eot20", {"max_iter": 100, "eot": 20, "chunk": 16, "eps": 0.2})]


def test_the_default_plan_and_worst_case_are_those_of_the_committed_reports():
    assert masking_report.attack_plan(0.2, 1000, 5) == DEFAULT_PLAN
    assert masking_report.attack_plan(0.2, 1000, 5, purification_attacks=False, purification_max_iter=3) == DEFAULT_PLAN
    assert masking_report.aligned_at_eps(0.2, 1000, 5) == ["transfer", "bpda", "pgd10", "pgd40", "pgd100", "pgd200",
                                                           "restarts5", "apgd_ce_dlr", "square1000"]
    opted = masking_report.attack_plan(0.2, 1000, 5, purification_attacks=True)
    assert opted[:len(DEFAULT_PLAN)] == DEFAULT_PLAN  # appended after the plan's attacks, at the run's eps
    assert opted[len(DEFAULT_PLAN):] == [
        ("diffhammer", {"max_iter": 100, "eot": 10, "seed": 0, "randomness": "aligned", "eps": 0.2}),
        ("diffattack", {"max_iter": 100, "eot": 20, "seed": 0, "randomness": "aligned", "eps": 0.2}),
        ("surrogate-pgd-eot", {"max_iter": 200, "eot": 20, "seed": 0, "randomness": "aligned", "surrogate_steps": 10,
                               "eps": 0.2})]
    assert masking_report.aligned_at_eps(0.2, 1000, 5, True)[-3:] == list(PURIFICATION)


def test_the_committed_128_image_report_resumes_without_attacking(tmp_path, monkeypatch):
    """Every part of docs/masking-report-128 is found under its fingerprint; the results are the committed ones."""
    committed = os.path.join(REPO, "docs", "masking-report-128")
    shutil.copytree(committed, tmp_path / "r")
    monkeypatch.setattr(masking_report, "run_attack", lambda *a, **k: pytest.fail("a committed part was attacked"))
    res = masking_report.run(str(tmp_path / "r"), samplers=("ddpm", "reverse", "ddim"), n_images=128, batch_size=128,
                             progress=False)
    with open(os.path.join(committed, "results.json")) as f:
        assert json.loads(json.dumps(res["samplers"])) == json.load(f)["samplers"]
    with open(os.path.join(committed, "report.md")) as f:
        assert (tmp_path / "r" / "report.md").read_text() == f.read()


def test_summed_wall_times_do_not_depend_on_the_python_version():
    """Left-to-right double additions: 3.12's compensated sum() gives 1.0 here, 3.11's and this helper 0.0, so the
    committed totals above resume bit for bit under either Python."""
    from art_diffpure._utils import ordered_sum

    assert ordered_sum([1e16, 1.0, -1e16]) == 0.0
    assert ordered_sum(iter([0.1, 0.2, 0.3])) == (0.1 + 0.2) + 0.3
    assert ordered_sum([]) == 0.0


def test_purification_attacks_add_their_parts_checks_and_worst_case(tmp_path, monkeypatch):
    """Smoke size (4 images, t* = 2, iteration counts cut); then the same directory without the flag: nothing new."""
    kwargs = tiny_masking_kwargs(monkeypatch)
    res = masking_report.run(str(tmp_path), purification_attacks=True, purification_max_iter=2, **kwargs)
    parts = sorted(os.listdir(tmp_path / "parts"))
    assert len(parts) == 11 + 3 and {f"ddpm__{k}.json" for k in PURIFICATION} <= set(parts)
    saved = json.load(open(tmp_path / "parts" / "ddpm__surrogate-pgd-eot.json"))
    assert saved["settings"] == {"max_iter": 2, "eot": 20, "seed": 0, "randomness": "aligned", "surrogate_steps": 10,
                                 "eps": 0.1}
    ddpm = res["samplers"]["ddpm"]
    stronger = {f"stronger_attack_{k}" for k in PURIFICATION}
    assert stronger <= {c["name"] for c in ddpm["checks"]} and ddpm["overall"] != "incomplete"
    for k in PURIFICATION:
        assert len(ddpm["accuracy"][k]["interval"]) == 2 and ddpm["accuracy"][k]["n"] == 4
    on_disk = json.load(open(tmp_path / "results.json"))
    assert stronger <= {c["name"] for c in on_disk["samplers"]["ddpm"]["checks"]}
    assert on_disk["settings"]["purification_attacks"]["diffhammer"]["max_iter"] == 2
    report = open(tmp_path / "report.md").read()
    assert all(f"| {name} |" in report for name in stronger) and "worst case over the 12 aligned attacks" in report
    worst = ddpm["worst_case_aligned"]
    assert worst["attacks"][-3:] == list(PURIFICATION)
    every = np.all([ddpm_part(tmp_path, k)["adv_correct"] for k in worst["attacks"]], axis=0)
    assert worst["adv_correct"] == every.tolist()

    # without the flag: the plan's parts are found under their fingerprints, the opt-in ones are not read
    monkeypatch.setattr(masking_report, "run_attack", lambda *a, **k: pytest.fail("a finished part was attacked"))
    plain = masking_report.run(str(tmp_path), **kwargs)
    assert sorted(os.listdir(tmp_path / "parts")) == parts
    names = {c["name"] for c in plain["samplers"]["ddpm"]["checks"]}
    assert not names & stronger and "stronger_attack_apgd_ce_dlr" in names
    assert "purification_attacks" not in plain["settings"]
    assert not set(PURIFICATION) & set(plain["samplers"]["ddpm"]["accuracy"])
    assert len(plain["samplers"]["ddpm"]["worst_case_aligned"]["attacks"]) == 9
    assert "Attacks built for purification" not in open(tmp_path / "report.md").read()


def ddpm_part(out, name: str) -> dict:
    """The saved result of one DDPM part."""
    with open(out / "parts" / f"ddpm__{name}.json") as f:
        return json.load(f)["result"]


def test_purification_max_iter_needs_the_flag(tmp_path, capsys):
    from art_diffpure.commands import main

    with pytest.raises(SystemExit) as stop:
        main(["masking", "--purification-max-iter", "2", "--out", str(tmp_path / "m")])
    assert stop.value.code == 2 and "only with --purification-attacks" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()

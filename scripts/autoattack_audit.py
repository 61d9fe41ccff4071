"""Audit of AutoAttack passed as an INSTANCE to RandomnessAlignedAttack, in each randomness mode (embedded digits,
t* = 10, purifier seed 5 != attack seed 0, 8 test images): rows purified / under the intended randomness / ambiguous /
uncontrolled. Writes docs/autoattack-audit.json.  Run: python scripts/autoattack_audit.py"""
import json, time, warnings, torch
warnings.filterwarnings("ignore"); torch.set_num_threads(1)
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
from art_diffpure import RandomnessAlignedAttack
from art_diffpure.attacks.autoattack import Fra31AutoAttack
from art_diffpure.models import digits as embedded
from art_diffpure.models.data import load_digits_split
from art_diffpure.evaluations.aligned import evaluate_aligned
x, y = load_digits_split("test"); x, y = x[:8], y[:8]
clf = embedded.digits_art_classifier(embedded.load_digits_purifier(t_star=10, seed=5))
out = {}
for mode in ("aligned", "transfer", "stochastic"):
    aa = AutoAttack(clf, eps=0.2, eps_step=0.2, batch_size=8, attacks=[
        AutoProjectedGradientDescent(clf, eps=0.2, eps_step=0.2, max_iter=10, nb_random_init=1, loss_type=l, verbose=False)
        for l in ("cross_entropy", "difference_logits_ratio")] + [SquareAttack(clf, eps=0.2, max_iter=50, nb_restarts=1, verbose=False)])
    fra = Fra31AutoAttack(clf, eps=0.2, n_iter=10, n_queries=50, batch_size=8)
    for label, inner in (("ART AutoAttack(APGD-CE, APGD-DLR, Square) instance", aa), ("fra31 AutoAttack standard instance", fra)):
        t = time.perf_counter()
        r = evaluate_aligned(RandomnessAlignedAttack(clf, attack=inner, randomness=mode, seed=0, batch_size=8), x, y).to_dict()
        a, tst = r["audit"]["attack"], r["audit"]["test"]
        out[f"{label} / {mode}"] = dict(robust=r["robust_accuracy"], clean=r["clean_accuracy"], identification=r["identification"],
            attack_calls=a["calls"], rows_purified=a["rows_purified"], rows_intended=a["rows_intended"], rows_ambiguous=a["rows_ambiguous"],
            rows_uncontrolled=a["rows_uncontrolled"], test_rows=tst["rows_purified"], test_intended=tst["rows_intended"], seconds=round(time.perf_counter()-t, 1))
        print(label, mode, out[f"{label} / {mode}"], flush=True)
json.dump(out, open("docs/autoattack-audit.json", "w"), indent=1)

"""Recompute a finished report's verdicts under bootstrap seeds 0-4 and write <report>/verdict_stability.json.

Run: python scripts/verdict_stability.py docs/digits-report [docs/digits-report-confirmatory ...]
A verdict that changes with the bootstrap's seed would rest on Monte Carlo noise; the laws' rule takes each
interval end with its Monte Carlo band so that none does. The file records the check, seed by seed.
"""
import json
import os
import sys

from art_diffpure.reproduce import laws
from art_diffpure.reproduce.render import write_json


def main(dirs: list[str]) -> int:
    unstable = 0
    for out in dirs:
        with open(os.path.join(out, "results.json")) as handle:
            res = laws.stability(json.load(handle))
        write_json(os.path.join(out, "verdict_stability.json"), res)
        print(out, "stable" if res["stable"] else "UNSTABLE",
              {law: v[0] if len(set(v)) == 1 else v for law, v in res["verdicts"].items()})
        unstable += not res["stable"]
    return 1 if unstable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["docs/digits-report"]))

"""
The console script ``art-diffpure``: one module per sub-command, each with ``register(subparsers)`` and
``run(args) -> exit status``.

- :mod:`~art_diffpure.commands.reproduce`: the paper's experiments on a preset;
- :mod:`~art_diffpure.commands.evaluate`: your own diffusion model, classifier and data under a named attack;
- :mod:`~art_diffpure.commands.masking`: the gradient-masking checks at full strength;
- :mod:`~art_diffpure.commands.convert_adm`: a guided-diffusion checkpoint as a diffusers directory;
- :mod:`~art_diffpure.commands.distributed`: the ``torchrun`` entry of the sharded evaluation;
- :mod:`~art_diffpure.commands.inputs`: models and data from command-line specs, checked before any work.

Only this package prints for the user or names ``--flags``; the library below it returns objects and raises.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``art-diffpure`` (and of ``python -m art_diffpure.commands``)."""
    from art_diffpure.commands import convert_adm, evaluate, masking, reproduce

    parser = argparse.ArgumentParser(prog="art-diffpure", description="art-diffpure: diffusion purification as an "
                                     "ART defence, evaluated with aligned randomness")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (reproduce, masking, evaluate, convert_adm):
        command.register(sub)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

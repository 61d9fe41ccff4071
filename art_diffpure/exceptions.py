"""Every exception class of the package, in one module (as ART keeps ``art/exceptions.py``).

Imports nothing from the package: any module may import from here without a cycle.

- randomness of an attack: :class:`RandomnessEscapeError`, :class:`AmbiguousRowsError`;
- user input: :class:`InputError`;
- presets of the reproduction: :class:`PresetUnavailable`;
- the result store of the reproduction: :class:`DirectoryInUse`, :class:`StoreWriteError`, :class:`UnreadableUnit`,
  :class:`RunMismatch`.
"""
from __future__ import annotations

__all__ = [
    "AmbiguousRowsError",
    "DirectoryInUse",
    "InputError",
    "PresetUnavailable",
    "RandomnessEscapeError",
    "RunMismatch",
    "StoreWriteError",
    "UnreadableUnit",
]


# ---------------------------------------------------------------------------------------------- randomness
class RandomnessEscapeError(RuntimeError):
    """A purifier call would run under randomness nobody chose (outside the control of a running attack)."""


class AmbiguousRowsError(RuntimeError):
    """Rows of a purifier call could not be mapped to their samples with certainty.

    A ``RuntimeError`` on purpose: ART's AutoAttack swallows ``ValueError`` from its targeted sub-attacks."""


# ---------------------------------------------------------------------------------------------- inputs
class InputError(ValueError):
    """A user input that cannot work; the message says what is wrong and how to fix it."""


class PresetUnavailable(RuntimeError):
    """A preset's weights, data or device are missing; the message says what and how to provide it."""


# ---------------------------------------------------------------------------------------------- result store
class DirectoryInUse(RuntimeError):
    """Another live process runs a command on the same output directory."""


class StoreWriteError(RuntimeError):
    """A unit or report file could not be written (disk full, read-only directory, ...)."""


class UnreadableUnit(ValueError):
    """A unit file that is not a unit this store can read safely."""


class RunMismatch(RuntimeError):
    """The output directory holds a run made with other settings (or not by this tool)."""

"""
A run's output directory as a store of finished units of work, so that a long run survives interruption.

Every finished unit (an experiment of ``reproduce``, a batch of samples of ``evaluate``, an attack of ``masking``)
is written atomically (temporary file, fsync, rename) with the fingerprint of the settings that produced it. A
rerun of the same command finds the units, skips them and assembles the same results; a rerun with other
settings is refused (:class:`RunMismatch`) instead of mixing old and new results.

Units are ``.npz`` archives read with ``allow_pickle=False``: the structure as JSON, every numpy array and scalar
as an array, so numbers come back bit-identical (a resumed run writes the same ``results.json`` as an uninterrupted
one) and reading a unit can never run code, whoever wrote the directory. A unit that cannot be read (truncated,
not ours, or a pickle) is set aside under a new name, named in a warning, and computed again.

Faults a long run survives: a second process on the same directory stops at once (:func:`directory_in_use`); a
write that fails (disk full, read-only directory) leaves no partial unit and ends with :class:`StoreWriteError`,
one line that says what was saved and how to resume.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import zipfile
from typing import Any, Iterator

import numpy as np

from art_diffpure.exceptions import DirectoryInUse, RunMismatch, StoreWriteError, UnreadableUnit
__all__ = ["DirectoryInUse", "RunMismatch", "RunStore", "StoreWriteError", "UnreadableUnit", "atomic_write", "claimed",
           "decode_unit", "directory_in_use", "encode_unit", "exit_cleanly_on_sigterm", "fingerprint"]

logger = logging.getLogger(__name__)

MANIFEST = "run.json"
PARTS = "parts"
#: Fault injection for the kill/resume tests: ``"<k>"`` kills this process (SIGKILL) halfway through writing the
#: k-th unit of the run, after half of its bytes reached the temporary file and before the rename.
KILL_DURING_WRITE_ENV = "ART_DIFFPURE_KILL_DURING_WRITE"
#: Fault injection for the disk-full tests: ``"<k>"`` makes the k-th write of this process fail with ENOSPC.
FAIL_WRITE_ENV = "ART_DIFFPURE_FAIL_WRITE"
UNIT_SUFFIX = ".npz"
SET_ASIDE = ".unreadable"






def fingerprint(settings: Any) -> str:
    """A short hash of JSON-able ``settings`` (sorted keys), the identity of a run's results."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


_WRITES = [0]


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one, never a part."""
    tmp = f"{path}.tmp{os.getpid()}"
    _WRITES[0] += 1
    kill_at, fail_at = os.environ.get(KILL_DURING_WRITE_ENV), os.environ.get(FAIL_WRITE_ENV)
    try:
        with open(tmp, "wb") as handle:
            if kill_at and int(kill_at) == _WRITES[0]:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            if fail_at and int(fail_at) == _WRITES[0]:
                handle.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # no partial file stays behind, and the caller learns where and why in one line
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise StoreWriteError(f"could not write {path}: {err.strerror or err}") from err
    try:  # the rename itself is durable only once the directory is synced
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote a claim may still run (one on another host is assumed to)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    if pid == os.getpid() or pid <= 0:  # our own leftover (or a malformed claim): not a live rival
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def claimed(path: str) -> Iterator[dict[str, Any] | None]:
    """
    Claim the unit of work at ``path`` while this process computes it, so that processes sharing one output
    directory split the units instead of repeating them (``<path>.claim``, created exclusively).

    Yields ``None`` when this process holds the claim (released on exit, error included), else the holder
    (``{"host", "pid"}``) of a live claim. A claim whose process has died on this host is taken over; one made on
    another host is respected until its file is deleted. Two processes taking over the same dead claim at once
    may both compute the unit: units are deterministic, so that costs time, not correctness.
    """
    claim = f"{path}.claim"
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    holder: dict[str, Any] | None = None
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(claim) as f:
                    holder = json.load(f)
            except (OSError, ValueError):  # being written by its maker this instant, or already released
                holder = {"host": "?", "pid": -1}
                if not os.path.exists(claim):
                    continue
            if _alive(holder):
                yield holder
                return
            with contextlib.suppress(FileNotFoundError):
                os.remove(claim)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            yield None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(claim)
        return
    yield holder


@contextlib.contextmanager
def directory_in_use(out: str, command: str) -> Iterator[None]:
    """
    Hold ``out`` for this process while ``command`` runs there (``<out>/run.claim``): a second process started on
    the same directory raises :class:`DirectoryInUse` at once, naming the holder, instead of racing on its
    files. A claim left by a process that has died is taken over.
    """
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    try:
        with claimed(os.path.join(out, "run")) as holder:
            if holder is not None:
                raise DirectoryInUse(
                    f"{out} is in use by process {holder.get('pid')} on {holder.get('host')} ({command}); wait for "
                    f"it to finish or stop it, or choose another --out")
            yield
    finally:
        if created:  # a run that wrote nothing (bad input, missing weights) leaves no empty directory behind
            with contextlib.suppress(OSError):
                os.rmdir(out)


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """JSON for the structure; numpy arrays and scalars go to ``arrays`` (bit-exact), referenced by key."""
    if isinstance(obj, (np.ndarray, np.generic)):
        if np.asarray(obj).dtype.hasobject:
            raise TypeError("a unit cannot hold a numpy object array")
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(obj)
        return {"__array__" if isinstance(obj, np.ndarray) else "__scalar__": key}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays) for v in obj]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    raise TypeError(f"a unit cannot hold a {type(obj).__name__} (only JSON types, tuples and numpy values)")


def _decode(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        (kind, value), = obj.items()
        if kind == "__array__":
            return arrays[value]
        if kind == "__scalar__":
            return arrays[value][()]
        if kind == "__tuple__":
            return tuple(_decode(v, arrays) for v in value)
        if kind == "__dict__":
            return {_decode(k, arrays): _decode(v, arrays) for k, v in value}
        raise UnreadableUnit(f"unknown entry {kind!r}")
    return obj


def encode_unit(unit: dict[str, Any]) -> bytes:
    """A unit as the bytes of an ``.npz`` archive (no pickle anywhere)."""
    arrays: dict[str, np.ndarray] = {}
    structure = json.dumps(_encode(unit, arrays))
    buffer = io.BytesIO()
    np.savez(buffer, __structure__=np.frombuffer(structure.encode(), dtype=np.uint8), **arrays)
    return buffer.getvalue()


def decode_unit(data: bytes) -> dict[str, Any]:
    """The unit of :func:`encode_unit`'s bytes; :class:`UnreadableUnit` for anything else (never unpickles)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        unit = _decode(json.loads(arrays.pop("__structure__").tobytes().decode()), arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, TypeError) as err:
        raise UnreadableUnit(f"{type(err).__name__}: {err}") from err
    if not isinstance(unit, dict) or not {"fingerprint", "name", "result", "seconds"} <= set(unit):
        raise UnreadableUnit("not a unit of this tool")
    return unit


def exit_cleanly_on_sigterm() -> None:
    """
    Make SIGTERM (``kill``, a job scheduler's stop) exit like Ctrl-C does, through ``finally`` blocks and context
    managers, so that this process's claims are released and its half-written temporary files removed (the
    default action ends the process at once and leaves its claims for the next run to take over).
    """
    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: obj}


def _changes(old: dict[str, Any], new: dict[str, Any], most: int = 4) -> str:
    """``key: old -> new`` for the settings that differ (leaves of nested settings, the first ``most``)."""
    a, b = _flat(old), _flat(json.loads(json.dumps(new, default=str)))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    text = ", ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in keys[:most])
    return (text + (f" and {len(keys) - most} more" if len(keys) > most else "")) or "unknown"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "unit"


class RunStore:
    """
    The finished units of one run in ``<out>/parts/``, under ``<out>/run.json`` (the settings and fingerprint).

    :param out: the output directory.
    :param settings: everything that decides the results (JSON-able); its hash is the run's fingerprint.
    :param force: discard what ``out`` holds (parts, manifest, report files) and start fresh.
    :param command: how the user reruns or restarts, for messages (e.g. ``"art-diffpure reproduce"``).
    """

    def __init__(self, out: str, settings: dict[str, Any], force: bool = False, command: str = "the command"):
        self.out, self.settings, self.command = out, settings, command
        self.fingerprint = fingerprint(settings)
        self.parts_dir = os.path.join(out, PARTS)
        manifest = os.path.join(out, MANIFEST)
        if force and os.path.isdir(out):
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            for name in (MANIFEST, "results.json", "report.md", "timings.json"):
                if os.path.exists(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
        if os.path.exists(manifest):
            with open(manifest) as handle:
                saved = json.load(handle)
            if saved.get("fingerprint") != self.fingerprint:
                raise RunMismatch(
                    f"{out} holds a run made with other settings (changed: {_changes(saved.get('settings', {}), settings)}); "
                    f"its results are not mixed with this run's. Rerun with --force to discard it, or choose "
                    f"another --out.")
        elif os.path.isdir(out) and any(os.path.exists(os.path.join(out, n)) for n in ("results.json", PARTS)):
            raise RunMismatch(f"{out} holds results that {command} did not record (no {MANIFEST}); rerun with "
                              f"--force to discard them, or choose another --out.")
        os.makedirs(self.parts_dir, exist_ok=True)
        for name in os.listdir(self.parts_dir):  # temporary files of a write that was interrupted
            if ".tmp" in name:
                os.remove(os.path.join(self.parts_dir, name))
            elif name.endswith(".pkl"):  # pickles are never loaded: reading one can run any code
                self._set_aside(os.path.join(self.parts_dir, name), "a pickle, which this tool never loads")
        if not os.path.exists(manifest):
            atomic_write(manifest, json.dumps({"fingerprint": self.fingerprint, "settings": settings},
                                              indent=1, sort_keys=True, default=str).encode())

    def _path(self, name: str) -> str:
        return os.path.join(self.parts_dir, _slug(name) + UNIT_SUFFIX)

    def _set_aside(self, path: str, why: str) -> None:
        target, k = path + SET_ASIDE, 1
        while os.path.exists(target):
            target, k = f"{path}{SET_ASIDE}{k}", k + 1
        os.replace(path, target)
        logger.warning("unit file %s is %s: set aside as %s; its unit is computed again", path, why, target)

    def finished(self) -> list[str]:
        """Names of the units already on disk (for this fingerprint)."""
        out = []
        for file in sorted(os.listdir(self.parts_dir)):
            if file.endswith(UNIT_SUFFIX):
                unit = self._read(os.path.join(self.parts_dir, file))
                if unit is not None:
                    out.append(unit["name"])
        return out

    def _read(self, path: str) -> dict[str, Any] | None:
        """The unit at ``path``; ``None`` when there is none, or when it cannot be read (then set aside)."""
        try:
            with open(path, "rb") as handle:
                unit = decode_unit(handle.read())
        except FileNotFoundError:
            return None
        except (UnreadableUnit, OSError) as err:
            self._set_aside(path, f"unreadable ({err})")
            return None
        if unit.get("fingerprint") != self.fingerprint:
            raise RunMismatch(f"{path} was made with other settings; rerun with --force or choose another --out.")
        return unit

    def load(self, name: str) -> tuple[Any, float] | None:
        """``(result, seconds)`` of a finished unit, or None."""
        unit = self._read(self._path(name))
        return None if unit is None else (unit["result"], unit["seconds"])

    def save(self, name: str, result: Any, seconds: float) -> None:
        """Record a finished unit atomically."""
        blob = encode_unit({"fingerprint": self.fingerprint, "name": name, "result": result, "seconds": seconds})
        try:
            atomic_write(self._path(name), blob)
        except StoreWriteError as err:
            saved = len([f for f in os.listdir(self.parts_dir) if f.endswith(UNIT_SUFFIX)])
            raise StoreWriteError(f"{err}; {saved} finished unit(s) are saved in {self.parts_dir}: free space (or make "
                                  f"it writable) and rerun {self.command} with the same options to resume") from err

    def report_finished(self) -> bool:
        """Whether ``results.json`` of this run is already written (the run is complete)."""
        return os.path.exists(os.path.join(self.out, "results.json"))

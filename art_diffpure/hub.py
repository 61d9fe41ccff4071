"""What the Hugging Face hub can give without network: offline mode, the local cache, and the message that says
how to get a model that is in neither a local directory nor the cache (instead of diffusers' misleading
"does not appear to have a file named config.json")."""
from __future__ import annotations

import os


def offline() -> bool:
    """Hugging Face offline mode, read now (the hub's constant is read once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return False


def in_cache(repo_id: str, subfolder: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds a config of ``repo_id`` (top level, ``unet/`` or ``subfolder``)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        names = ["config.json", "unet/config.json"] + ([f"{subfolder}/config.json"] if subfolder else [])
        return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names)
    except Exception:  # noqa: BLE001 - an invalid repo id (e.g. a missing local path) is "not cached"
        return False


def unavailable_message(name_or_path: str, why: str) -> str:
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover
        cache = "the Hugging Face cache"
    return (f"{name_or_path!r} is neither a local directory nor in the local Hugging Face cache ({cache}), and "
            f"{why}. Where there is network, save it once: DiffusionPurifier.from_pretrained({name_or_path!r})"
            ".save_pretrained(DIR), then copy DIR here and call DiffusionPurifier.from_pretrained(DIR); or download "
            f"it into the cache there (huggingface-cli download {name_or_path}), copy the cache here (HF_HOME / "
            "HF_HUB_CACHE) and load it with HF_HUB_OFFLINE=1")


__all__ = ["in_cache", "offline", "unavailable_message"]

"""The configuration a root was processed with: ``<root>/state/config.json``, written when
`run`, `serve`, `replay` or `demo` start on the root, read by the commands that come later
without ``--config`` (`reprocess`, the exports). Kept as the configuration's dumped form
(``Config.model_dump(mode="json")``): `contimg.config.config_from_dict` makes it a `Config`."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["config_differences", "config_path", "store_config", "stored_config"]


def config_path(root: str | Path) -> Path:
    """Where ``root``'s configuration is stored."""
    return Path(root) / "state" / "config.json"


def store_config(root: str | Path, cfg) -> Path:
    """Store ``cfg`` (a `contimg.config.Config`, resolved: its base, the environment and the
    command's own changes applied) as ``root``'s configuration, replacing the one before;
    written under a temporary name, then renamed, so a reader never sees half a file."""
    path = config_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cfg.model_dump(mode="json"), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def stored_config(root: str | Path) -> dict | None:
    """``root``'s stored configuration (the dumped form), or None when none was stored."""
    path = config_path(root)
    return json.loads(path.read_text()) if path.is_file() else None


def config_differences(old: dict, new: dict, *, limit: int = 5) -> list[str]:
    """``key: old -> new`` for the values of two dumped configurations that differ (at most
    ``limit``, then how many more)."""
    out: list[str] = []

    def walk(a, b, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys()):
                walk(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        elif a != b:
            out.append(f"{prefix}: {a!r} -> {b!r}")

    walk(old, new, "")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])

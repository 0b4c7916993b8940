"""A program's small state file: JSON, replaced atomically, so a kill at any moment leaves the
old version or the new one, never half of either. The chain stays the source of truth; the
state only remembers what the chain cannot tell (a blob uploaded but not yet submitted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from marketplace.errors import ConfigError
from marketplace.storage.files import write_atomically

MAX_STATE_BYTES = 16 * 1024 * 1024


class StateFile:
    """A JSON object on disk; `save` after every change that must survive a kill."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read the state file {self.path}: {exc}") from None
        if len(raw) > MAX_STATE_BYTES:
            raise ConfigError(f"the state file {self.path} is over {MAX_STATE_BYTES:,} bytes")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ConfigError(f"the state file {self.path} is not JSON; move it away") from None
        if not isinstance(data, dict):
            raise ConfigError(f"the state file {self.path} is not a JSON object")
        return data

    def section(self, *keys: str | int) -> dict[str, Any]:
        """The nested object under `keys`, created empty if missing (saved with the rest)."""
        node = self.data
        for key in keys:
            node = node.setdefault(str(key), {})
        return node

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.data, indent=1, sort_keys=True))

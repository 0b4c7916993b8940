"""A program's small state file: JSON, replaced atomically, so a kill at any moment leaves the
old version or the new one, never half of either. The chain stays the source of truth; the
state only remembers what the chain cannot tell (a blob uploaded but not yet submitted)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from marketplace.errors import ConfigError

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


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: readers see the old file or the new one, never half of one,
    and the new one is on disk (fsynced) before it takes the old one's name."""
    write_bytes_atomically(path, text.encode())


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`write_atomically` for bytes. The temp file's name starts with a dot, and the rename is
    made durable too (the folder fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

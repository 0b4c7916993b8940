"""Local files: replaced atomically (a temporary file in the same folder, fsynced, renamed over
the old one, and the folder fsynced, so a kill at any moment leaves the old file or the new
one), and a file a user names read with a cap. The blob store, state files, the privacy ledger
and the devnet file write this way; the command lines and the keystore read this way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from marketplace.errors import ConfigError


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


def read_file(path: Path, cap: int) -> bytes:
    """A file the user named, at most `cap` bytes; a ConfigError that names it otherwise."""
    try:
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise ConfigError(f"{path} is over the cap of {cap:,} bytes")
    return data

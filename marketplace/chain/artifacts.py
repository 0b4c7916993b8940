"""The compiled contracts the package ships (`artifacts/*.json`, built by `make build`): an
installed package reads them and needs neither Node nor a compiler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """The committed artifact of contract `name`."""
    artifact: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return artifact

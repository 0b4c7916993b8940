"""Where a running devnet answers and what is deployed on it (`devnet.json`): written by
`marketplace devnet` (the dev extra), read by every program that connects to it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from marketplace.errors import ConfigError
from marketplace.rules.messages import Frozen
from marketplace.storage.files import write_atomically

DEVNET_FILE = "devnet.json"
Engine = Literal["tester", "anvil"]


class DevAccount(Frozen):
    """A funded dev account; its key is public by design (never use it on a real network)."""

    address: str
    private_key: str  # 0x hex


class DevnetInfo(Frozen):
    """Where a running devnet answers and what is deployed on it."""

    engine: Engine
    rpc_url: str
    chain_id: int
    contract: str  # the GradientMarketplace, checksummed
    deploy_block: int
    accounts: tuple[DevAccount, ...]
    pid: int  # the process serving the RPC
    ipfs_url: str | None = None  # the IPFS node the programs use; None: the local store


def write_devnet_info(path: Path, info: DevnetInfo) -> None:
    write_atomically(path, info.model_dump_json(indent=2))


def read_devnet_info(path: Path) -> DevnetInfo:
    try:
        return DevnetInfo.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "malformed file"
        raise ConfigError(
            f"no devnet at {path} ({detail}): start one with `marketplace devnet`"
        ) from None

"""Settings of the programs (`sponsor`, `miner`, `marketplace`): flags override environment
variables (`GM_*`), which override the defaults. Only the CLIs read settings; libraries take
their collaborators in constructors."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PASSWORD_ENV = "GM_PASSWORD"
"""The environment variable a keystore's password may come from (else a prompt asks)."""


class Settings(BaseSettings):
    """Where the chain, the blobs and this program's state are.

    Attributes:
        data_dir: the embedded defaults live here: `devnet.json` (the local chain's address),
            `blobs/` (the local content-addressed store), `state/` (each program's file) and
            `index.sqlite` (the chain indexer's database).
        rpc_url: any Ethereum JSON-RPC node; None: the devnet written in `data_dir`.
        contract: the marketplace's address; None: the devnet's.
        ipfs_url: a Kubo/IPFS node's RPC API (`http://127.0.0.1:5001`); None: `data_dir/blobs`.
        keystore: an encrypted keystore file (eth-account) to sign with.
        account: a dev account by index (the devnet's funded keys); used when no keystore.
        poll_seconds: how often a long-running program looks at the chain again.
        outage_seconds: how long a long-running program waits out an unreachable Ethereum
            node or IPFS node (a restart, say) before it gives up.
    """

    model_config = SettingsConfigDict(env_prefix="GM_", frozen=True, extra="ignore")

    data_dir: Path = Path(".market")
    rpc_url: str | None = None
    contract: str | None = None
    ipfs_url: str | None = None
    keystore: Path | None = None
    account: int | None = Field(default=None, ge=0, lt=100)
    poll_seconds: float = Field(default=2.0, gt=0, le=3600)
    outage_seconds: float = Field(default=300.0, ge=0, le=86_400)

    @property
    def devnet_file(self) -> Path:
        return self.data_dir / "devnet.json"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def index_file(self) -> Path:
        return self.data_dir / "index.sqlite"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"


def settings_with(**overrides: object) -> Settings:
    """Settings from the environment, with every override that is not None applied (flags)."""
    given = {name: value for name, value in overrides.items() if value is not None}
    return Settings(**given)  # type: ignore[arg-type]

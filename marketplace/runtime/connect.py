"""From settings to live collaborators: the signing account, the chain client, the blob store.

Keys: a dev account by index (the devnet's funded keys, public by design) or an encrypted
keystore file whose password comes from `GM_PASSWORD` or a prompt; never a raw private key on
a command line. Transactions are signed in this process (web3's sign-and-send middleware), so
the same program runs on the devnet, anvil, geth or a testnet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder

from marketplace.chain.client import ChainClient
from marketplace.errors import ConfigError
from marketplace.runtime.config import PASSWORD_ENV, Settings
from marketplace.runtime.devnet_info import DevnetInfo, read_devnet_info
from marketplace.storage.files import read_file
from marketplace.storage.stores import BlobStore, IpfsStore, LocalStore

MAX_KEYSTORE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Connection:
    """What a program acts through: its account, the chain, the store, and the chain's id
    (envelopes are bound to it). One object, handed to every role instead of four arguments."""

    account: LocalAccount
    chain: ChainClient
    store: BlobStore
    chain_id: int

    @property
    def address(self) -> str:
        return str(self.account.address)


class Connected:
    """A role's part that acts through a `Connection`: its collaborators as attributes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.chain = conn.chain
        self.store = conn.store
        self.account = conn.account
        self.address = conn.address
        self.chain_id = conn.chain_id


def dev_account(info: DevnetInfo, index: int) -> LocalAccount:
    """The devnet's funded account `index` (0-9)."""
    if not 0 <= index < len(info.accounts):
        raise ConfigError(f"the devnet has accounts 0-{len(info.accounts) - 1}, not {index}")
    account: LocalAccount = Account.from_key(info.accounts[index].private_key)
    return account


def keystore_account(path: Path, password: str) -> LocalAccount:
    """Decrypt an eth-account keystore file; a wrong password is a ConfigError, not a trace."""
    raw = read_file(path, MAX_KEYSTORE_BYTES)
    try:
        key = Account.decrypt(json.loads(raw), password)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot decrypt {path}: {exc}") from None
    account: LocalAccount = Account.from_key(key)
    return account


def load_account(settings: Settings, ask_password: Callable[[], str] | None = None) -> LocalAccount:
    """The account the settings name: a keystore (password from GM_PASSWORD, else asked),
    else a dev account of the devnet."""
    if settings.keystore is not None:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            if ask_password is None:
                raise ConfigError(f"the keystore needs a password: set {PASSWORD_ENV}")
            password = ask_password()
        return keystore_account(settings.keystore, password)
    if settings.account is None:
        raise ConfigError("name an account: --account N (a dev account) or --keystore FILE")
    return dev_account(read_devnet_info(settings.devnet_file), settings.account)


def ipfs_url(settings: Settings) -> str | None:
    """The IPFS node the settings name, else the one the devnet file names (when the chain
    comes from it too), else None: the local store."""
    if settings.ipfs_url:
        return settings.ipfs_url
    if (settings.rpc_url and settings.contract) or not settings.devnet_file.exists():
        return None
    return read_devnet_info(settings.devnet_file).ipfs_url


def open_store(settings: Settings) -> BlobStore:
    """The IPFS node `ipfs_url` finds, else the local store in the data folder."""
    url = ipfs_url(settings)
    return IpfsStore(url) if url else LocalStore(settings.blob_dir)


def signing_web3(rpc_url: str, account: LocalAccount | None) -> Web3:
    """A web3 over HTTP that signs `account`'s transactions locally."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
    if account is not None:
        w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)
    return w3


def chain_endpoint(settings: Settings) -> tuple[str, str]:
    """(RPC URL, contract address): from the settings, else from the devnet file."""
    if settings.rpc_url and settings.contract:
        return settings.rpc_url, settings.contract
    info = read_devnet_info(settings.devnet_file)
    return settings.rpc_url or info.rpc_url, settings.contract or info.contract


def connect(settings: Settings, account: LocalAccount | None) -> Connection:
    """The chain and store the settings name, signing as `account` (None: read only).

    A read-only connection still needs an address to call from; it uses the zero account.
    """
    rpc_url, contract = chain_endpoint(settings)
    w3 = signing_web3(rpc_url, account)
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # any transport failure: the node is not there
        raise ConfigError(f"no Ethereum node answers at {rpc_url}: {exc}") from None
    if not w3.eth.get_code(Web3.to_checksum_address(contract)):
        raise ConfigError(f"no contract at {contract} on the chain at {rpc_url}")
    reader = account if account is not None else Account.from_key(b"\x01" * 32)
    return Connection(reader, ChainClient(w3, contract), open_store(settings), chain_id)

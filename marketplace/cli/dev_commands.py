"""The developer's commands: `marketplace devnet`, `marketplace engines ...` and `deploy`.

`devnet` and `engines` need the devnet extra (eth-tester, py-evm, py-solc-x): they import
`marketplace.dev` only when they run, so the programs start without it, and without it they
say in one line which extra to install. `deploy` needs no extra: it sends the compiled
artifacts to any JSON-RPC node.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer

from marketplace.cli.common import ConnectionOptions, console, option_groups, readable_errors
from marketplace.errors import ConfigError
from marketplace.runtime.devnet_info import DevnetInfo

DEVNET_EXTRA = "pip install 'gradient-marketplace[devnet]'"
EXTRA_MODULES = frozenset({"eth_tester", "eth", "solcx", "sklearn", "matplotlib"})
"""What the devnet extra installs, by the name Python imports (py-evm is `eth`)."""


@contextmanager
def devnet_extra(command: str) -> Iterator[None]:
    """Imports of the devnet extra: a missing one is one line naming the extra, not a trace."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        if package not in EXTRA_MODULES:
            raise
        raise ConfigError(
            f"`marketplace {command}` needs the devnet extra ({package} is missing): {DEVNET_EXTRA}"
        ) from None


@readable_errors
@option_groups(cli=("data_dir", "ipfs"))
def devnet(
    host: Annotated[
        str, typer.Option(help="Interface to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port of the JSON-RPC server (0: any free one).")
    ] = 8545,
    engine: Annotated[
        str, typer.Option(help="tester (embedded eth-tester) or anvil (npm's, if installed).")
    ] = "tester",
    state: Annotated[
        Path | None,
        typer.Option(help="anvil only: keep the chain in this file and resume from it."),
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Start a local chain with ten funded dev accounts and the marketplace deployed, and write
    its address to DATA_DIR/devnet.json, where every other program finds it (and the IPFS node
    --ipfs names, if any). Ctrl-C stops it."""
    if engine not in ("tester", "anvil"):
        raise ConfigError(f"--engine is tester or anvil, not {engine!r}")
    with devnet_extra("devnet"):
        from marketplace.dev.devnet import run_devnet
    settings = cli.settings

    def announce(info: DevnetInfo) -> None:
        console.print(f"devnet ({info.engine}) at {info.rpc_url}, chain id {info.chain_id}")
        console.print(f"marketplace at {info.contract}; written to {settings.devnet_file}")
        console.print(f"blobs: {info.ipfs_url or settings.blob_dir}")
        console.print("dev accounts (keys are public, for this chain only):")
        for index, account in enumerate(info.accounts):
            console.print(f"  {index}: {account.address}")

    chosen: Literal["tester", "anvil"] = "anvil" if engine == "anvil" else "tester"
    run_devnet(
        settings.data_dir,
        host=host,
        port=port,
        engine=chosen,
        announce=announce,
        ipfs_url=settings.ipfs_url,
        state=state,
    )


engines_app = typer.Typer(
    help="anvil and an IPFS node in the background, bound to 127.0.0.1, their data in a folder.",
    no_args_is_help=True,
)
EnginesFolder = Annotated[
    Path | None,
    typer.Option("--folder", help="Their data, logs and PID files (default: .engines/)."),
]


@engines_app.command("start")
@readable_errors
@option_groups(cli=("data_dir",))
def engines_start(
    folder: EnginesFolder = None,
    # engines.ANVIL_PORT and engines.IPFS_PORT, written out: marketplace.dev is imported only
    # when a command runs (a test pins them equal)
    anvil_port: Annotated[int, typer.Option(help="anvil's JSON-RPC port.")] = 8545,
    ipfs_port: Annotated[int, typer.Option(help="The IPFS RPC API's port.")] = 5002,
    *,
    cli: ConnectionOptions,
) -> None:
    """Start anvil and the IPFS node (those not running), deploy the marketplace unless
    anvil's saved chain holds it, and write DATA_DIR/devnet.json: every program then uses them."""
    with devnet_extra("engines start"):
        from marketplace.dev.engines import ENGINES_DIR, Engines
    settings = cli.settings
    engines = Engines(folder or ENGINES_DIR, anvil_port, ipfs_port)
    info = engines.start(settings.data_dir)
    for status in engines.status():
        console.print(status.describe())
    console.print(f"marketplace at {info.contract}; written to {settings.devnet_file}")


@engines_app.command("stop")
@readable_errors
def engines_stop(folder: EnginesFolder = None) -> None:
    """Stop exactly the processes `engines start` began (anvil saves its chain first)."""
    with devnet_extra("engines stop"):
        from marketplace.dev.engines import ENGINES_DIR, Engines
    for name, was_running in Engines(folder or ENGINES_DIR).stop():
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@engines_app.command("status")
@readable_errors
def engines_status(folder: EnginesFolder = None) -> None:
    """Whether each engine runs and answers; exit code 3 unless both do."""
    with devnet_extra("engines status"):
        from marketplace.dev.engines import ENGINES_DIR, Engines
    statuses = Engines(folder or ENGINES_DIR).status()
    for status in statuses:
        console.print(status.describe())
    if not all(status.answering for status in statuses):
        raise typer.Exit(3)


@readable_errors
@option_groups(cli=("data_dir", "rpc", "account", "keystore"))
def deploy(
    *,
    cli: ConnectionOptions,
    min_window: Annotated[
        int,
        typer.Option(
            help="Shortest round or phase window a task may set, in seconds (lower it only "
            "on a devnet whose clock you move)",
            min=0,
        ),
    ] = 3600,  # chain.PUBLIC_MIN_WINDOW, written out: this module imports web3 only when used
) -> None:
    """Deploy a fresh marketplace from this account on the chain --rpc names (any JSON-RPC
    node); prints its address, for --contract or GM_CONTRACT."""
    from marketplace.chain.client import ChainClient
    from marketplace.runtime.connect import signing_web3
    from marketplace.runtime.devnet_info import read_devnet_info

    settings = cli.settings
    deployer = cli.signing_account()
    rpc_url = settings.rpc_url or read_devnet_info(settings.devnet_file).rpc_url
    web3 = signing_web3(rpc_url, deployer)
    market = ChainClient.deploy(web3, deployer.address, min_window=min_window)
    console.print(f"marketplace deployed at {market.address} on {rpc_url}")
    console.print(
        f"  next: set GM_RPC_URL={rpc_url} and the line below in every program's environment "
        "(or pass --rpc and --contract); then: sponsor task create",
        soft_wrap=True,
    )
    print(f"GM_CONTRACT={market.address}")  # plain: meant to be copied whole

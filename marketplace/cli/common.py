"""What every command line shares: the connection options, readable errors, amounts.

Every program takes `--data-dir`, `--rpc`, `--contract`, `--ipfs` (each also a `GM_*`
environment variable) and, to sign, `--account N` (a devnet account) or `--keystore FILE`
(password from GM_PASSWORD or a prompt). They are declared once, in `ConnectionOptions`, and
`option_groups` lays them out in each command's signature (after the subcommand, where users
type them). A `MarketplaceError`, or web3's error for a node that refuses, is unreachable or
mines nothing in time, becomes one red line on stderr and exit code 1; a traceback is only ever
a bug.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.markup import escape

from marketplace.chain.transactions import NODE_ERRORS, describe_node_error
from marketplace.errors import ConfigError, ContractRevert, MarketplaceError
from marketplace.rules.messages import Phase, TaskState
from marketplace.runtime.config import Settings, settings_with
from marketplace.runtime.connect import Connection, connect, load_account

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
errors = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where devnet.json, blobs/ and state/ live [env GM_DATA_DIR]."),
]
Rpc = Annotated[
    str | None,
    typer.Option("--rpc", help="A JSON-RPC URL (default: the devnet's) [env GM_RPC_URL]."),
]
Contract = Annotated[
    str | None,
    typer.Option(
        "--contract", help="The marketplace address (default: the devnet's) [env GM_CONTRACT]."
    ),
]
Ipfs = Annotated[
    str | None,
    typer.Option(
        "--ipfs", help="An IPFS RPC API URL (default: the local store) [env GM_IPFS_URL]."
    ),
]
AccountIndex = Annotated[
    int | None,
    typer.Option("--account", help="Sign as this devnet account (0-9) [env GM_ACCOUNT]."),
]
Keystore = Annotated[
    Path | None,
    typer.Option(
        "--keystore", help="Sign with this keystore file; password from GM_PASSWORD or a prompt."
    ),
]


class OptionGroup:
    """A frozen dataclass of typer options (fields annotated like parameters, with defaults)
    that `option_groups` lays out in a command's signature in place of the parameter it
    annotates; the command receives the dataclass, built from what was typed."""


def option_groups(
    **subsets: tuple[str, ...],
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Lay each `OptionGroup` parameter of the command out as the group's options, where the
    parameter stands, and hand the command the group built from them.

    Typer reads the options from `inspect.signature`, which honours `__signature__`, so they
    stay options of the subcommand (`sponsor task create ... --rpc URL --account 1`); a Typer
    callback would take them before the subcommand only. `subsets` names, per parameter, the
    only fields offered (`option_groups(cli=READING)`); the others keep their defaults.
    """

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(command, eval_str=True)
        laid_out: list[inspect.Parameter] = []
        groups: dict[str, tuple[type[OptionGroup], list[str]]] = {}
        for param in signature.parameters.values():
            group = param.annotation
            if not (isinstance(group, type) and issubclass(group, OptionGroup)):
                laid_out.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            fields = _group_fields(group, subsets.get(param.name))
            groups[param.name] = (group, [field.name for field in fields])
            laid_out += fields
        if unknown := set(subsets) - set(groups):
            raise TypeError(f"{command.__name__} has no option group {sorted(unknown)}")

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            for name, (group, fields) in groups.items():
                given = {field: kwargs.pop(field) for field in fields if field in kwargs}
                kwargs[name] = group(**given)
            return command(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=laid_out)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {param.name: param.annotation for param in laid_out} | {
            "return": signature.return_annotation
        }
        return wrapper

    return decorate


def _group_fields(
    group: type[OptionGroup], only: tuple[str, ...] | None
) -> list[inspect.Parameter]:
    """The group's fields (those `only` names, if given) as keyword parameters."""
    hints = typing.get_type_hints(group, include_extras=True)
    fields = [field for field in dataclasses.fields(group) if only is None or field.name in only]  # type: ignore[arg-type]
    if only is not None and (unknown := set(only) - {field.name for field in fields}):
        raise TypeError(f"{group.__name__} has no field {sorted(unknown)}")
    return [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=hints[field.name],
            default=inspect.Parameter.empty
            if field.default is dataclasses.MISSING
            else field.default,
        )
        for field in fields
    ]


READING = ("data_dir", "rpc", "contract", "ipfs")
"""The options of a command that reads the chain and the store but signs nothing."""


@dataclass(frozen=True)
class ConnectionOptions(OptionGroup):
    """The connection options as typed (None: not given, the environment's or the default)."""

    data_dir: DataDir = None
    rpc: Rpc = None
    contract: Contract = None
    ipfs: Ipfs = None
    account: AccountIndex = None
    keystore: Keystore = None

    @functools.cached_property
    def settings(self) -> Settings:
        """The settings: these options over the GM_* environment over the defaults."""
        return settings_with(
            data_dir=self.data_dir,
            rpc_url=self.rpc,
            contract=self.contract,
            ipfs_url=self.ipfs,
            account=self.account,
            keystore=self.keystore,
        )

    @property
    def names_signer(self) -> bool:
        """Whether --account or --keystore was typed (the environment alone does not count)."""
        return self.account is not None or self.keystore is not None

    def signing_account(self) -> LocalAccount:
        """The account the settings name (asking for a keystore's password if needed)."""
        return load_account(
            self.settings, lambda: typer.prompt("keystore password", hide_input=True)
        )

    def signer(self) -> Connection:
        """A connection that signs as the settings' account."""
        return connect(self.settings, self.signing_account())

    def reader(self) -> Connection:
        """A read-only connection."""
        return connect(self.settings, None)


def readable_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn every MarketplaceError of `command`, and every refusal or outage of the Ethereum
    node (web3's errors), into one line on stderr and exit code 1 (printed as is: a `[...]` in
    it is text, not rich markup)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ContractRevert as exc:
            errors.print(f"[red]error:[/] the contract refused: {escape(str(exc))}", soft_wrap=True)
        except MarketplaceError as exc:
            errors.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        except NODE_ERRORS as exc:
            errors.print(f"[red]error:[/] {escape(describe_node_error(exc))}", soft_wrap=True)
        except KeyboardInterrupt:
            errors.print("interrupted")
            raise typer.Exit(130) from None
        raise typer.Exit(1)

    return wrapper


def parse_amount(text: str, decimals: int = 18) -> int:
    """'10', '0.5' or '1.5eth' -> base units; '123wei' as is."""
    value = text.strip().lower()
    if value.endswith("wei"):
        digits = value[:-3].strip()
        if not digits.isdigit():
            raise ConfigError(f"not an amount in wei: {text!r}")
        return int(digits)
    value = value.removesuffix("eth").strip()
    try:
        amount = Decimal(value) * (Decimal(10) ** decimals)
    except InvalidOperation:
        raise ConfigError(f"not an amount: {text!r} (try 10, 0.5 or 1000wei)") from None
    if amount < 0 or amount != amount.to_integral_value():
        raise ConfigError(f"not a whole number of base units: {text!r}")
    return int(amount)


def show_amount(units: int, decimals: int = 18, symbol: str = "ETH") -> str:
    return f"{Decimal(units) / (Decimal(10) ** decimals):,.6f} {symbol}".replace(".000000 ", " ")


def parse_duration(text: str) -> int:
    """'90', '90s', '15m', '2h' or '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0)
    number = value[:-1] if scale else value
    if not number.isdigit():
        raise ConfigError(f"not a duration: {text!r} (try 90, 15m, 2h or 7d)")
    return int(number) * (scale or 1)


def show_time(timestamp: int) -> str:
    """A chain timestamp for people ("-" for none)."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def show_duration(seconds: int) -> str:
    """600 -> '10m', 7200 -> '2h', 90 -> '90s': as `parse_duration` reads it back."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def next_steps(task_id: int, task: TaskState, phase: Phase) -> list[str]:
    """What comes next for task `task_id` in `phase`, and the command that does it: the lines
    a command that moved the task prints after what it did."""
    finalize = f"sponsor task finalize {task_id}"
    claims = show_time(task.claim_deadline)
    steps = {
        Phase.ROUNDS: [
            f"miners train until {show_time(task.rounds_end)}; "
            f"after the last round: sponsor task reveal {task_id}"
        ],
        Phase.REVEAL: [
            f"the sponsor reveals by {show_time(task.reveal_deadline)}: "
            f"sponsor task reveal {task_id}"
        ],
        Phase.EVALUATION: [
            "evaluators now score and post payout roots "
            f"(by {show_time(task.evaluation_deadline)})",
            f"then, {show_duration(task.challenge_window)} after a root is agreed: {finalize}",
        ],
        Phase.CHALLENGE: [f"a root is agreed; after {show_time(task.challenge_end)}: {finalize}"],
        Phase.CLAIMS: [
            f"winners claim until {claims}: sponsor claim --task {task_id} "
            f"(miners: miner claim --task {task_id})",
            f"the sponsor's model: sponsor model pull --task {task_id} -o model/",
            f"the sponsor's unallocated part: sponsor task reclaim {task_id} "
            f"(again after {claims} for what was not claimed)",
        ],
        Phase.CLOSED: [f"what was not claimed goes back by: sponsor task reclaim {task_id}"],
        Phase.UNREVEALED: [f"submitters take their refunds: miner claim --task {task_id}"],
        Phase.UNSETTLED: [
            f"submitters take their refunds: miner claim --task {task_id}; "
            f"with no submissions, the sponsor: sponsor task reclaim {task_id}"
        ],
    }
    return steps.get(phase, ["nothing else to do"])


def quiet_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )

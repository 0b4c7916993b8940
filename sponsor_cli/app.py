"""`sponsor`: the command line of sponsors and data scientists.

sponsor task create --validation val.csv --bounty 10 --evaluator dev:1 --account 0
sponsor task show 1
sponsor arch propose --task 1 --spec mlp.json --seed 1 --account 2
sponsor task reveal 1 --account 0 ; sponsor task finalize 1 --account 0
sponsor claim --task 1 --account 2
sponsor model predict --model DIR --data new.csv -o predictions.csv
"""

from __future__ import annotations

from typing import Annotated

import typer
from eth_utils.address import is_address, to_checksum_address

from marketplace.cli.common import (
    ConnectionOptions,
    console,
    option_groups,
    readable_errors,
    show_amount,
)
from marketplace.errors import ConfigError
from marketplace.protocol.reports import claim_payout
from sponsor_cli import arch, model, task

app = typer.Typer(
    help="Post bounties for models, propose architectures, claim payouts.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(task.app, name="task")
app.add_typer(arch.app, name="arch")
app.add_typer(model.app, name="model")


@app.command()
@readable_errors
@option_groups()
def claim(
    task_id: Annotated[int, typer.Option("--task", help="The task id.", min=1)],
    for_account: Annotated[
        str | None, typer.Option("--for", help="Claim this account's leaf (default: yours).")
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Claim a payout of a finalized task with its Merkle proof (from the posted report).
    Anyone may send it (and pays its gas); the money always goes to the leaf's account."""
    connection = cli.signer()
    if for_account is not None and not is_address(for_account):
        raise ConfigError(f"--for {for_account!r} is not an Ethereum address")
    who = str(to_checksum_address(for_account)) if for_account else connection.address
    entry, claimed = claim_payout(
        connection.chain, connection.store, connection.address, task_id, account=who
    )
    if entry is None:
        console.print(f"task {task_id} owes {who} nothing")
    elif claimed:
        console.print(
            f"claimed {show_amount(entry.amount)} and {entry.points:,} reputation points for {who}",
            soft_wrap=True,
        )
        if who != connection.address:
            console.print(f"  sent (and gas paid) by {connection.address}")
    else:
        console.print(
            f"leaf {entry.index} of {who} ({show_amount(entry.amount)}) was already claimed"
        )

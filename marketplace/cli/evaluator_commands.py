"""The evaluator's commands, and anyone's check of them: `marketplace key`, `evaluate`, `verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from marketplace.cli.common import (
    ConnectionOptions,
    console,
    next_steps,
    option_groups,
    readable_errors,
)
from marketplace.errors import ConfigError
from marketplace.protocol.tasks import account_key, miner_key, paillier_hex
from marketplace.runtime.config import Settings
from marketplace.runtime.state import StateFile

TaskId = Annotated[int, typer.Option("--task", help="The task id.", min=1)]


@readable_errors
@option_groups(cli=("data_dir", "account", "keystore"))
def key(
    task: Annotated[
        int | None, typer.Option("--task", help="Show the per-task key a miner registers.")
    ] = None,
    paillier: Annotated[
        bool,
        typer.Option(
            "--paillier", help="Show the Paillier key that opens secure aggregation sums."
        ),
    ] = False,
    *,
    cli: ConnectionOptions,
) -> None:
    """Print this account's X25519 public key: evaluators give it to sponsors, who seal the
    validation set and the updates to it (`sponsor task create --evaluator ADDR=KEY`). With
    --paillier, its Paillier n instead (`sponsor task create --aggregate ADDR=N`)."""
    signer_account = cli.signing_account()
    if paillier:
        print(f"{signer_account.address}={paillier_hex(signer_account)}")
        return
    pair = account_key(signer_account) if task is None else miner_key(signer_account, task)
    print(f"{signer_account.address}={pair.public_hex}")  # plain: meant to be copied whole


@readable_errors
@option_groups()
def evaluate(
    task: TaskId,
    once: Annotated[bool, typer.Option(help="Do what is due now, then stop.")] = False,
    poll: Annotated[float | None, typer.Option(help="Seconds between looks at the chain.")] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Evaluate task TASK: post each round's merge when the round closes; after the reveal,
    check and score every node, compute the payouts, upload the report (every leaf with its
    proof) and post its root. Safe to stop and start again at any moment."""
    import time

    from marketplace.roles.evaluator import Evaluator
    from marketplace.runtime.outage import OutageGuard

    settings = cli.settings
    connection = cli.signer()
    if connection.address not in connection.chain.evaluators(task):
        raise ConfigError(f"{connection.address} is not an evaluator of task {task}")
    evaluator = Evaluator(connection, _state(settings, connection.address))
    console.print(f"evaluator {connection.address} on task {task}")
    guard = OutageGuard(settings.outage_seconds, console.print)

    def one_pass() -> bool:
        for line in evaluator.step(task):
            console.print(line)
        return evaluator.finished(task)

    pause = poll or settings.poll_seconds
    if once:  # one pass, however long an outage makes it wait
        guard.retry(one_pass, pause)
    else:
        while not guard.attempt(one_pass):
            time.sleep(pause)
    phase = connection.chain.phase(task)
    console.print(f"task {task}: {phase.name.lower()}")
    if once:
        for step in next_steps(task, connection.chain.task(task), phase):
            console.print(f"  next: {step}", soft_wrap=True)


@readable_errors
@option_groups()
def verify(
    task: Annotated[
        int | None, typer.Option("--task", help="The task id (or give --card).", min=1)
    ] = None,
    card: Annotated[
        Path | None,
        typer.Option(help="A model card (model_card.json or MODEL_CARD.md): check every line."),
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Recompute a task's settlement from public data and say whether the posted root holds.

    With --card, first check the model card against the chain: every number of it, the
    Markdown against its JSON twin, and the weights file beside it against the delivered
    digest. With --account/--keystore, also re-score what that account can read: a miner the
    merges, an evaluator every node. Exit code 0 when everything matches, 2 when not."""
    from marketplace.delivered.modeldir import check_card_file
    from marketplace.roles.verify import verify_task
    from marketplace.runtime.connect import connect

    if (task is None) == (card is None):
        raise ConfigError("give --task N or --card FILE (the card names its task)")
    verifier = cli.signing_account() if cli.names_signer else None
    connection = connect(cli.settings, verifier)
    card_ok = True
    if card is not None:
        checked, problems = check_card_file(connection.chain, connection.store, card)
        task, card_ok = checked.task_id, not problems
        for problem in problems:
            console.print(f"[red]card:[/] {problem}")
        if card_ok:
            console.print(f"[green]every line of {card} holds against the chain[/]")
    assert task is not None
    pair = None
    if verifier is not None:
        is_evaluator = connection.address in connection.chain.evaluators(task)
        is_sponsor = connection.chain.task(task).sponsor == connection.address
        pair = account_key(verifier) if is_evaluator or is_sponsor else miner_key(verifier, task)
    result = verify_task(
        connection.chain, connection.store, task, connection.chain_id, verifier, pair
    )
    table = Table(title=f"task {task}: verification")
    table.add_column("check")
    table.add_column("holds")
    table.add_column("detail")
    for check in result.checks:
        table.add_row(check.name, "[green]yes[/]" if check.ok else "[red]NO[/]", check.detail)
    console.print(table)
    if not result.ok:
        console.print("[red]the posted settlement does not match[/]")
    else:
        console.print("[green]the posted root matches the recomputed payouts[/]")
    if not (result.ok and card_ok):
        raise typer.Exit(2)


def _state(settings: Settings, address: str) -> StateFile:
    return StateFile(settings.state_dir / f"evaluator-{address}.json")

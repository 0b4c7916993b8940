"""`miner`: the data owner's command line. Your data stays on this machine: only weights sealed
to the task's evaluators, a row count and, under DP, the epsilon spent ever leave it.

    miner run --task 1 --data shard.csv --account 4     # every round, then claim
    miner run --task 1 --data ./my-data/ --once          # submit to the open round and stop
    miner claim --task 1 --account 4
    miner watch --data shard.csv --account 4             # every task whose data schema fits
    miner privacy --data shard.csv                       # the DP budget this data has spent
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from marketplace.cli.common import (
    ConnectionOptions,
    OptionGroup,
    console,
    option_groups,
    readable_errors,
    show_amount,
    show_time,
)
from marketplace.errors import ConfigError
from marketplace.rules.messages import Phase
from marketplace.runtime.config import Settings
from marketplace.runtime.connect import Connection
from marketplace.runtime.outage import OutageGuard
from marketplace.runtime.state import StateFile
from miner.claims import collect
from miner.config import MinerConfig
from miner.ledger import DEFAULT_BUDGET, PrivacyLedger, fingerprint
from miner.parents import Waiting
from miner.trainer import Trainer
from miner.watcher import Watcher
from miner.worker import Miner

app = typer.Typer(
    help="Train tasks' models on your private data and get paid for what they gain.",
    no_args_is_help=True,
    add_completion=False,
)

TaskId = Annotated[int, typer.Option("--task", help="The task id.", min=1)]
DataPath = Annotated[
    Path,
    typer.Option(
        "--data", help="Your private data: a CSV/.npz file or a folder of them.", exists=True
    ),
]


def _miner(
    connection: Connection,
    settings: Settings,
    data: Path,
    config: MinerConfig,
    progress: Progress | None,
    budget: float = DEFAULT_BUDGET,
) -> Miner:
    lineage = "" if config.lineage is None else f"-lineage-{config.lineage}"
    state = StateFile(settings.state_dir / f"miner-{connection.address}{lineage}.json")
    bar: dict[str, TaskID] = {}

    def on_step(done: int, total: int) -> None:
        if progress is None:
            return
        if done == 1 or "id" not in bar:
            bar["id"] = progress.add_task("training", total=total)
        progress.update(bar["id"], completed=done)

    return Miner(
        connection,
        Trainer(),
        data,
        state,
        config,
        progress=on_step,
        ledger=_ledger(settings, budget),
    )


def _ledger(settings: Settings, budget: float = DEFAULT_BUDGET) -> PrivacyLedger:
    """One ledger per machine's data dir: every account training a dataset shares its budget."""
    return PrivacyLedger(settings.state_dir / "privacy-ledger.json", budget)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@dataclass(frozen=True)
class TrainingOptions(OptionGroup):
    """How `miner run` trains: the MinerConfig, and the privacy budget of the data."""

    epochs: Annotated[int, typer.Option(help="Local epochs per round.", min=1)] = 5
    batch_size: Annotated[int, typer.Option(help="Rows per step.", min=1)] = 32
    learning_rate: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 1e-3
    optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam"
    seed: Annotated[int, typer.Option(help="Training seed (round r trains with seed + r).")] = 0
    dp_epsilon: Annotated[
        float | None, typer.Option(help="Train with DP-SGD (Opacus), spending this epsilon.")
    ] = None
    dp_delta: Annotated[float, typer.Option(help="DP delta (below 1 / your rows).")] = 1e-5
    max_grad_norm: Annotated[float, typer.Option(help="DP per-sample clipping norm.")] = 1.0
    prox_mu: Annotated[
        float | None,
        typer.Option(help="FedProx proximal weight (default: the task spec's prox_mu)."),
    ] = None
    dp_budget: Annotated[
        float,
        typer.Option(help="Total epsilon this data may spend, over every task and round."),
    ] = DEFAULT_BUDGET
    arch: Annotated[
        int | None,
        typer.Option("--arch", help="The architecture to train when no merge is readable."),
    ] = None
    parent: Annotated[int | None, typer.Option(help="Always build on this node.")] = None
    lineage: Annotated[
        int | None,
        typer.Option(
            help="Train only this architecture's lineage (run one miner per architecture to "
            "train each: the cap is per account and architecture)."
        ),
    ] = None

    def config(self) -> MinerConfig:
        """The miner's configuration; a bad training option is one line now, not an error in
        round 0."""
        config = MinerConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            seed=self.seed,
            dp_epsilon=self.dp_epsilon,
            dp_delta=self.dp_delta,
            max_grad_norm=self.max_grad_norm,
            prox_mu=self.prox_mu,
            architecture=self.arch,
            parent=self.parent,
            lineage=self.lineage,
        )
        config.train_config(0)
        return config


@app.command()
@readable_errors
@option_groups()
def run(
    task: TaskId,
    data: DataPath,
    *,
    training: TrainingOptions,
    once: Annotated[bool, typer.Option(help="Submit to the open round, then stop.")] = False,
    poll: Annotated[float | None, typer.Option(help="Seconds between looks at the chain.")] = None,
    cli: ConnectionOptions,
) -> None:
    """Take part in task TASK: every round, train on the best merge you can read (else an
    architecture), seal the new weights to the evaluators, upload, submit; then claim.

    Safe to stop and start again at any moment: it resumes from the chain and its state file
    and never submits twice in a round.
    """
    settings = cli.settings
    config = training.config()
    connection = cli.signer()
    with _progress() as progress:
        miner = _miner(connection, settings, data, config, progress, training.dp_budget)
        if once:
            _submit_once(miner, connection, task, settings, poll)
            return
        console.print(f"miner {connection.address} on task {task}")
        miner.run(
            task,
            poll or settings.poll_seconds,
            on_event=console.print,
            outage_seconds=settings.outage_seconds,
        )
    console.print(f"task {task}: done ({connection.chain.phase(task).name.lower()})")


def _submit_once(
    miner: Miner, connection: Connection, task: int, settings: Settings, poll: float | None
) -> None:
    """`miner run --once`: submit to the open round (after the merge due first, if any), say
    what was submitted and what comes next."""
    guard = OutageGuard(settings.outage_seconds, console.print)
    pause = poll or settings.poll_seconds
    submission = guard.retry(lambda: miner.submit_round(task), pause)
    if isinstance(submission, Waiting):  # the previous round's merge is due first
        console.print(str(submission))
    while isinstance(submission, Waiting):
        time.sleep(pause)
        submission = guard.retry(lambda: miner.submit_round(task), pause)
    if submission is None:
        raise ConfigError(f"task {task} has no open round ({connection.chain.phase(task).name})")
    verb = "submitted"
    if submission.found:
        verb = "already submitted"
    elif submission.resumed:
        verb = "submitted the blob sealed earlier (no retraining):"
    console.print(
        f"round {submission.round}: {verb} node {submission.node_id} "
        f"(parent {submission.parent}, {submission.samples} rows, {submission.cid})"
    )
    state = connection.chain.task(task)
    if submission.round + 1 < state.rounds:
        opens = show_time(state.round_end(submission.round))
        step = f"run --once again when round {submission.round + 1} opens ({opens})"
    else:
        step = f"after settlement: miner claim --task {task}"
    console.print(f"  next: {step} (or run without --once to do both)", soft_wrap=True)


@app.command()
@readable_errors
@option_groups()
def claim(
    task: TaskId,
    *,
    cli: ConnectionOptions,
) -> None:
    """Claim what task TASK owes you (or your refunds, if the sponsor never revealed)."""
    from marketplace.protocol.reports import claim_payout

    settings = cli.settings
    connection = cli.signer()
    phase = connection.chain.phase(task)
    if phase in (Phase.UNREVEALED, Phase.UNSETTLED):
        state = StateFile(settings.state_dir / f"miner-{connection.address}.json")
        done = collect(connection, state, task)
        for line in done or ["nothing to refund"]:
            console.print(line)
        return
    if phase is not Phase.CLAIMS:
        raise ConfigError(f"task {task} is in phase {phase.name}: claims open after finalize")
    entry, claimed = claim_payout(connection.chain, connection.store, connection.address, task)
    if entry is None:
        console.print(f"task {task} owes {connection.address} nothing")
    elif claimed:
        console.print(f"claimed {show_amount(entry.amount)} and {entry.points:,} reputation points")
    else:
        console.print(f"leaf {entry.index} ({show_amount(entry.amount)}) was already claimed")


@app.command()
@readable_errors
@option_groups()
def watch(
    data: DataPath,
    epochs: Annotated[int, typer.Option(help="Local epochs per round.", min=1)] = 5,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    poll: Annotated[float | None, typer.Option(help="Seconds between looks at the chain.")] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Stop after this many passes (default: never).")
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Keep going over every task: submit to each open round your data fits, claim what is
    owed. Stops with Ctrl-C (safe at any moment)."""
    settings = cli.settings
    connection = cli.signer()
    miner = _miner(connection, settings, data, MinerConfig(epochs=epochs, seed=seed), None)
    watcher = Watcher(miner, data)

    def one_pass() -> None:
        for line in watcher.one_pass():
            console.print(line)

    guard = OutageGuard(settings.outage_seconds, console.print)
    passes = 0
    while iterations is None or passes < iterations:
        passes += 1
        guard.attempt(one_pass)
        if iterations is None or passes < iterations:
            time.sleep(poll or settings.poll_seconds)


@app.command()
@readable_errors
@option_groups(cli=("data_dir",))
def privacy(
    data: DataPath,
    dp_budget: Annotated[float, typer.Option(help="The budget to compare with.")] = DEFAULT_BUDGET,
    *,
    cli: ConnectionOptions,
) -> None:
    """How much differential-privacy budget this data has spent, submission by submission."""
    settings = cli.settings
    ledger = _ledger(settings, dp_budget)
    spent = ledger.spent(fingerprint(data))
    for key, spend in sorted(spent.spends.items()):
        measured = "measured" if spend.measured else "reserved"
        console.print(
            f"{key}: epsilon {spend.epsilon:.3f} ({measured}), delta {spend.delta:g}",
            soft_wrap=True,
        )
    console.print(
        f"spent epsilon {spent.epsilon:.3f} (delta {spent.delta:g}) over {len(spent.spends)} "
        f"submissions; {max(0.0, dp_budget - spent.epsilon):.3f} of {dp_budget:g} left"
    )


def main() -> None:
    app()

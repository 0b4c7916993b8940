"""`sponsor task ...`: create, reveal, finalize, cancel and reclaim a task (the sub-app; what
list and show print is `task_view`'s, the terms create reads from its options `task_terms`')."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marketplace.cli.common import (
    ConnectionOptions,
    console,
    next_steps,
    option_groups,
    readable_errors,
    show_amount,
    show_time,
)
from marketplace.rules.messages import Phase, TaskParams
from marketplace.storage.files import read_file
from sponsor_cli import task_view
from sponsor_cli.task_terms import (
    AggregationOptions,
    RewardOptions,
    ScheduleOptions,
    SchemaOptions,
    evaluator_entry,
    task_spec,
)

if TYPE_CHECKING:
    from marketplace.roles.sponsor import CreatedTask

app = typer.Typer(help="Create and run tasks: bounties for models.", no_args_is_help=True)

MAX_FILE_BYTES = 1024 * 1024 * 1024


@app.command()
@readable_errors
@option_groups()
def create(
    validation: Annotated[
        Path, typer.Option(help="The validation set (CSV or .npz): sealed to the evaluators.")
    ],
    bounty: Annotated[str, typer.Option(help="The bounty: 10, 0.5 or 1000wei (18 decimals).")],
    evaluator: Annotated[
        list[str],
        typer.Option(help="ADDRESS=X25519KEY (from `marketplace key`), or dev:N on a devnet."),
    ],
    *,
    schedule: ScheduleOptions,
    spec: Annotated[
        Path | None, typer.Option(help="A TaskSpec JSON file (replaces every spec option).")
    ] = None,
    name: Annotated[str, typer.Option(help="Task name (without --spec).")] = "task",
    schema: SchemaOptions,
    rewards: RewardOptions,
    aggregation: AggregationOptions,
    cli: ConnectionOptions,
) -> None:
    """Create a task and escrow its bounty.

    The validation file is committed on-chain and sealed to the evaluators (and to you);
    nobody else can read it until you reveal it after the last round. Its schema (features,
    label column, metric, classes) is read from the file. Example, on a devnet:

        sponsor task create --validation val.csv --bounty 10 --evaluator dev:1 --account 0
    """
    from marketplace.roles.sponsor import create_task

    settings = cli.settings
    file = read_file(validation, MAX_FILE_BYTES)
    terms, source = task_spec(validation, file, spec, name, schema, rewards)
    connection = cli.signer()
    evaluators = [evaluator_entry(settings, item) for item in evaluator]
    if (aggregated := aggregation.aggregation(settings)) is not None:
        terms = terms.model_copy(update={"aggregation": aggregated})
    params = schedule.params(bounty, [address for address, _ in evaluators])
    created = create_task(
        connection,
        file,
        terms,
        params,
        [key for _, key in evaluators],
    )
    _print_created(created, params, source, schedule)


def _print_created(
    created: CreatedTask, params: TaskParams, source: str, schedule: ScheduleOptions
) -> None:
    console.print(f"created task [bold]{created.task_id}[/] ({created.result.gas_used:,} gas)")
    console.print(f"  schema: {source}", soft_wrap=True)
    rounds = f"{schedule.rounds} rounds of {schedule.round_duration}"
    console.print(f"  bounty {show_amount(params.bounty)}, {rounds}")
    console.print(f"  spec {created.spec_cid}; validation sealed as {created.validation_cid}")
    console.print(
        f"  next: data scientists propose architectures "
        f"(sponsor arch propose --task {created.task_id}), miners train them",
        soft_wrap=True,
    )
    console.print(f"  after the last round: sponsor task reveal {created.task_id}")


app.command("list")(task_view.list_tasks)
app.command()(task_view.show)


def _one_transaction(name: str, help_text: str) -> None:
    """Register `sponsor task NAME ID`: one transaction by the signer, its events printed."""

    @readable_errors
    @option_groups()
    def command(
        task_id: Annotated[int, typer.Argument(help="The task id.")], *, cli: ConnectionOptions
    ) -> None:
        connection = cli.signer()
        chain = connection.chain
        if name == "reveal":
            from marketplace.roles.sponsor import reveal

            result = reveal(connection, task_id)
        else:
            action = {
                "finalize": chain.finalize,
                "cancel": chain.cancel_task,
                "reclaim": chain.reclaim,
            }[name]
            result = action(connection.address, task_id)
        console.print(f"task {task_id}: {name} done ({result.gas_used:,} gas)")
        for event in result.events:
            amount = getattr(event, "amount", getattr(event, "refunded", None))
            shown = f": {show_amount(int(amount))}" if amount is not None else ""
            console.print(f"  {event.name}{shown}")
        phase = chain.phase(task_id)
        console.print(f"  phase now {phase.name.lower()}")
        if name == "reclaim":
            steps = ["nothing else to reclaim"]
            if phase is Phase.CLAIMS:
                when = show_time(chain.task(task_id).claim_deadline)
                steps = [f"what is not claimed by {when}: sponsor task reclaim {task_id} again"]
        else:
            steps = next_steps(task_id, chain.task(task_id), phase)
        for step in steps:
            console.print(f"  next: {step}", soft_wrap=True)

    command.__doc__ = help_text
    app.command(name)(command)


_one_transaction("reveal", "Reveal the validation set (publish it, reveal the salt).")
_one_transaction("finalize", "Make the agreed payout root final once the challenge window ends.")
_one_transaction("cancel", "Cancel a task nobody has submitted to; the bounty comes back.")
_one_transaction("reclaim", "Take back what the payouts did not allocate (or was not claimed).")

"""What `sponsor task list` and `sponsor task show` print: every task's phase, and one task's
schedule, model tree with scores, and payouts (or all of it as JSON)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.tree import Tree

from marketplace.cli.common import (
    READING,
    ConnectionOptions,
    console,
    next_steps,
    option_groups,
    readable_errors,
    show_amount,
    show_time,
)
from marketplace.protocol.reports import shown_report
from marketplace.protocol.tasks import nodes_by_id
from marketplace.rules.messages import NodeKind, Phase, TaskState
from marketplace.wire.report import PayoutReport


@readable_errors
@option_groups(cli=READING)
def list_tasks(*, cli: ConnectionOptions) -> None:
    """List every task with its phase, bounty and the end of its current phase."""
    connection = cli.reader()
    chain = connection.chain
    table = Table(title="tasks")
    for column in ("id", "phase", "sponsor", "bounty", "rounds", "nodes", "phase ends"):
        table.add_column(column)
    for task_id in range(1, chain.task_count() + 1):
        task, phase = chain.task(task_id), chain.phase(task_id)
        table.add_row(
            str(task_id),
            phase.name.lower(),
            task.sponsor[:10] + "...",
            show_amount(task.bounty),
            str(task.rounds),
            str(task.node_count),
            show_time(_phase_end(task, phase)),
        )
    console.print(table)


@readable_errors
@option_groups(cli=READING)
def show(
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    *,
    cli: ConnectionOptions,
) -> None:
    """Show a task: its phase and schedule, the model tree with scores, and the payouts."""
    connection = cli.reader()
    chain = connection.chain
    task, phase = chain.task(task_id), chain.phase(task_id)
    report = shown_report(chain, connection.store, task_id)
    records = nodes_by_id(chain, task_id)
    if as_json:
        dump: dict[str, Any] = {
            "task_id": task_id,
            "phase": phase.name.lower(),
            "task": _plain(task.model_dump()),
            "evaluators": chain.evaluators(task_id),
            "nodes": [_plain(r.model_dump()) for r in records.values()],
            "report": None if report is None else report.model_dump(mode="json"),
        }
        console.print_json(json.dumps(dump, default=str))
        return
    console.print(f"[bold]task {task_id}[/]: {phase.name.lower()}, sponsor {task.sponsor}")
    console.print(f"  bounty {show_amount(task.bounty)}, escrow {show_amount(task.escrow)}")
    for index in range(task.rounds):
        console.print(f"  round {index} ends {show_time(task.round_end(index))}")
    for label, when in (
        ("reveal by", task.reveal_deadline),
        ("evaluation by", task.evaluation_deadline),
        ("claims until", task.claim_deadline if task.finalized else 0),
    ):
        if when:
            console.print(f"  {label} {show_time(when)}")
    console.print(f"  evaluators: {', '.join(chain.evaluators(task_id))}")
    console.print(_tree(task_id, records, report))
    if report is not None:
        table = Table(title="payouts (ETH)", box=box.SIMPLE_HEAD, collapse_padding=True)
        columns = ("leaf", "account", "amount", "expertise", "data", "compute", "deposits")
        for column in (*columns, "points", "claimed"):
            table.add_column(column)
        for entry in report.payouts:
            claimed = chain.is_claimed(task_id, entry.index) if task.finalized else False
            parts = (entry.amount, entry.expertise, entry.data, entry.compute, entry.deposits)
            table.add_row(
                str(entry.index),
                entry.account[:8] + "…",
                *(_ether(part) for part in parts),
                f"{entry.points:,}",
                "yes" if claimed else "no",
            )
        console.print(table)
    for step in next_steps(task_id, task, phase):
        console.print(f"  next: {step}", soft_wrap=True)


def _tree(task_id: int, records: dict[int, Any], report: PayoutReport | None) -> Tree:
    verdicts = {n.node_id: n for n in report.nodes} if report is not None else {}
    winner = report.winner if report is not None else None
    tree = Tree(f"task {task_id}")
    branches: dict[int, Tree] = {0: tree}
    for node_id in sorted(records):
        record = records[node_id]
        verdict = verdicts.get(node_id)
        text = f"{node_id} {record.kind.name.lower()} by {record.author[:10]}..."
        if record.kind is NodeKind.MERGE and len(record.parents) > 1:
            text += f" of {list(record.parents)}"
        if verdict is not None:
            text += (
                f": score {verdict.score}, gain {verdict.gain}"
                if verdict.valid
                else f": [red]invalid ({verdict.reason.split(':')[0]})[/]"
            )
        if node_id == winner:
            text += " [bold green]<- winner[/]"
        parent = min(record.parents) if record.parents else 0
        branches[node_id] = branches.get(parent, tree).add(text)
    return tree


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """A model's fields as JSON values: bytes as 0x hex."""
    return {k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in fields.items()}


def _ether(units: int) -> str:
    """Wei as ETH, without trailing zeros: 2010000000000000000 -> 2.01 (--json has the wei)."""
    return f"{Decimal(units) / 10**18:f}".rstrip("0").rstrip(".") if units else "0"


def _phase_end(task: TaskState, phase: Phase) -> int:
    return {
        Phase.ROUNDS: task.rounds_end,
        Phase.REVEAL: task.reveal_deadline,
        Phase.EVALUATION: task.evaluation_deadline,
        Phase.CHALLENGE: task.challenge_end,
        Phase.CLAIMS: task.claim_deadline,
    }.get(phase, 0)

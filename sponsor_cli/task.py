"""`sponsor task ...`: create, watch, reveal, finalize, cancel and reclaim a task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from pydantic import ValidationError
from rich import box
from rich.table import Table
from rich.tree import Tree

from marketplace.cli.common import (
    AccountIndex,
    Contract,
    DataDir,
    Ipfs,
    Keystore,
    Rpc,
    console,
    next_steps,
    options,
    parse_amount,
    parse_duration,
    read_file,
    readable_errors,
    reader,
    show_amount,
    show_time,
    signer,
)
from marketplace.errors import ConfigError
from marketplace.protocol.tasks import account_key, nodes_by_id, paillier_hex
from marketplace.rules.messages import (
    ZERO_ADDRESS,
    Aggregation,
    Metric,
    NodeKind,
    Phase,
    RewardSplit,
    TaskParams,
    TaskSpec,
    TaskState,
)
from marketplace.rules.schemas import InferredSchema, infer_schema, summary
from marketplace.runtime.config import Settings
from marketplace.runtime.connect import dev_account
from marketplace.runtime.devnet_info import read_devnet_info
from marketplace.wire.envelope import public_key_from_hex
from marketplace.wire.report import PayoutReport, shown_report

app = typer.Typer(help="Create and run tasks: bounties for models.", no_args_is_help=True)

MAX_FILE_BYTES = 1024 * 1024 * 1024


SCHEMA = "Data schema (inferred from --validation; give one to override it)"
REWARDS = "Rewards and credit"
AGGREGATION = "Secure aggregation"
DEFAULTS = TaskSpec.model_fields


def _default(name: str) -> Any:
    return DEFAULTS[name].default


@app.command()
@readable_errors
def create(
    validation: Annotated[
        Path, typer.Option(help="The validation set (CSV or .npz): sealed to the evaluators.")
    ],
    bounty: Annotated[str, typer.Option(help="The bounty: 10, 0.5 or 1000wei (18 decimals).")],
    evaluator: Annotated[
        list[str],
        typer.Option(help="ADDRESS=X25519KEY (from `marketplace key`), or dev:N on a devnet."),
    ],
    token: Annotated[str, typer.Option(help="An ERC-20 address; default ETH.")] = ZERO_ADDRESS,
    deposit: Annotated[str, typer.Option(help="Deposit per submission.")] = "0.01",
    quorum: Annotated[int, typer.Option(help="Evaluators that must agree on a root.")] = 1,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 4,
    round_duration: Annotated[str, typer.Option(help="e.g. 1h.")] = "1h",
    reveal_window: Annotated[str, typer.Option(help="Time to reveal after the rounds.")] = "1h",
    evaluation_window: Annotated[str, typer.Option(help="Time to post roots.")] = "1h",
    challenge_window: Annotated[str, typer.Option(help="Wait before finalizing.")] = "10m",
    claim_window: Annotated[str, typer.Option(help="Time to claim.")] = "7d",
    start: Annotated[int, typer.Option(help="Unix time the rounds start (0: now).")] = 0,
    spec: Annotated[
        Path | None, typer.Option(help="A TaskSpec JSON file (replaces every spec option).")
    ] = None,
    name: Annotated[str, typer.Option(help="Task name (without --spec).")] = "task",
    metric: Annotated[
        Metric | None,
        typer.Option(
            help="Default: accuracy if every label is an integer, else negated_sse.",
            rich_help_panel=SCHEMA,
        ),
    ] = None,
    features: Annotated[
        int | None,
        typer.Option(
            help="Feature columns (default: every column but the label).",
            min=1,
            rich_help_panel=SCHEMA,
        ),
    ] = None,
    classes: Annotated[
        int | None,
        typer.Option(
            help="Classes, for accuracy (default: the largest label + 1; give it when the "
            "validation set lacks a class).",
            rich_help_panel=SCHEMA,
        ),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(help="The label column (default: 'label').", rich_help_panel=SCHEMA),
    ] = None,
    expertise_bps: Annotated[
        int, typer.Option(help="Architecture share, basis points.", rich_help_panel=REWARDS)
    ] = 2000,
    data_bps: Annotated[
        int, typer.Option(help="Data share, basis points.", rich_help_panel=REWARDS)
    ] = 5000,
    compute_bps: Annotated[
        int, typer.Option(help="Compute share, basis points.", rich_help_panel=REWARDS)
    ] = 2000,
    max_samples_credited: Annotated[
        int,
        typer.Option(
            help="Rows an update is credited for at most, whatever its miner declares (the "
            "compute share and sample-weighted merges).",
            min=1,
            rich_help_panel=REWARDS,
        ),
    ] = _default("max_samples_credited"),
    no_update_tolerance: Annotated[
        float,
        typer.Option(
            help="An update whose weights all stay within this of its parent's is no update: "
            "refused, its deposit kept.",
            min=0,
            rich_help_panel=REWARDS,
        ),
    ] = _default("no_update_tolerance"),
    min_gain: Annotated[
        int,
        typer.Option(
            help="The least gain credited, in score units (validation rows for accuracy); "
            "smaller gains are noise.",
            min=1,
            rich_help_panel=REWARDS,
        ),
    ] = _default("min_gain"),
    max_submissions_per_round: Annotated[
        int,
        typer.Option(
            help="Updates one account may submit per round.", min=1, rich_help_panel=REWARDS
        ),
    ] = _default("max_submissions_per_round"),
    class_guard: Annotated[
        int,
        typer.Option(
            help="Accuracy: merge an update whose removal would cut one class's recall by more "
            "than this many basis points (0: off).",
            min=0,
            max=10_000,
            rich_help_panel=REWARDS,
        ),
    ] = _default("class_guard_bps"),
    max_blob_mb: Annotated[int, typer.Option(help="Cap on any blob, MiB.")] = 64,
    aggregate: Annotated[
        str | None,
        typer.Option(
            help="Secure aggregation rounds, opened by this evaluator: ADDRESS=PAILLIER_N "
            "(from `marketplace key --paillier`) or dev:N. It must be the only evaluator.",
            rich_help_panel=AGGREGATION,
        ),
    ] = None,
    clip: Annotated[
        float,
        typer.Option(
            help="With --aggregate: each update value is clipped to +-clip.",
            rich_help_panel=AGGREGATION,
        ),
    ] = 0.05,
    max_miners: Annotated[
        int,
        typer.Option(
            help="With --aggregate: miners per round and base (slot headroom).",
            rich_help_panel=AGGREGATION,
        ),
    ] = 16,
    aggregate_rounds: Annotated[
        str,
        typer.Option(
            help="With --aggregate: which rounds, e.g. 1,2 (default: every one).",
            rich_help_panel=AGGREGATION,
        ),
    ] = "",
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
    account: AccountIndex = None,
    keystore: Keystore = None,
) -> None:
    """Create a task and escrow its bounty.

    The validation file is committed on-chain and sealed to the evaluators (and to you);
    nobody else can read it until you reveal it after the last round. Its schema (features,
    label column, metric, classes) is read from the file. Example, on a devnet:

        sponsor task create --validation val.csv --bounty 10 --evaluator dev:1 --account 0
    """
    from marketplace.roles.sponsor import create_task

    settings = options(data_dir, rpc, contract, ipfs, account, keystore)
    file = read_file(validation, MAX_FILE_BYTES)
    choices = SpecChoices(
        name=name,
        split=(expertise_bps, data_bps, compute_bps),
        max_blob_bytes=max_blob_mb * 1024 * 1024,
        settings={
            "max_samples_credited": max_samples_credited,
            "no_update_tolerance": no_update_tolerance,
            "min_gain": min_gain,
            "max_submissions_per_round": max_submissions_per_round,
            "class_guard_bps": class_guard,
        },
    )
    if spec is not None:
        task_spec = _read_spec(spec)
        source = f"{summary(task_spec.data)}, from {spec.name}"
    else:
        inferred = infer_schema(
            file,
            choices.max_blob_bytes,
            label_column=label_column,
            metric=metric,
            features=features,
            classes=classes,
        )
        task_spec, source = _spec(choices, inferred), inferred.describe(validation.name)
    connection = signer(settings)
    evaluators = [_evaluator(settings, item) for item in evaluator]
    if aggregate is not None:
        task_spec = task_spec.model_copy(
            update={
                "aggregation": _aggregation(settings, aggregate, clip, max_miners, aggregate_rounds)
            }
        )
    params = _params(
        token,
        bounty,
        deposit,
        start,
        rounds,
        quorum,
        [address for address, _ in evaluators],
        (round_duration, reveal_window, evaluation_window, challenge_window, claim_window),
    )
    created = create_task(
        connection.chain,
        connection.store,
        connection.account,
        connection.chain_id,
        file,
        task_spec,
        params,
        [key for _, key in evaluators],
    )
    console.print(f"created task [bold]{created.task_id}[/] ({created.result.gas_used:,} gas)")
    console.print(f"  schema: {source}", soft_wrap=True)
    console.print(f"  bounty {show_amount(params.bounty)}, {rounds} rounds of {round_duration}")
    console.print(f"  spec {created.spec_cid}; validation sealed as {created.validation_cid}")
    console.print(
        f"  next: data scientists propose architectures "
        f"(sponsor arch propose --task {created.task_id}), miners train them",
        soft_wrap=True,
    )
    console.print(f"  after the last round: sponsor task reveal {created.task_id}")


@app.command("list")
@readable_errors
def list_tasks(
    data_dir: DataDir = None, rpc: Rpc = None, contract: Contract = None, ipfs: Ipfs = None
) -> None:
    """List every task with its phase, bounty and the end of its current phase."""
    connection = reader(options(data_dir, rpc, contract, ipfs))
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


@app.command()
@readable_errors
def show(
    task_id: Annotated[int, typer.Argument(help="The task id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    data_dir: DataDir = None,
    rpc: Rpc = None,
    contract: Contract = None,
    ipfs: Ipfs = None,
) -> None:
    """Show a task: its phase and schedule, the model tree with scores, and the payouts."""
    connection = reader(options(data_dir, rpc, contract, ipfs))
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


def _one_transaction(name: str, help_text: str) -> None:
    """Register `sponsor task NAME ID`: one transaction by the signer, its events printed."""

    @readable_errors
    def command(
        task_id: Annotated[int, typer.Argument(help="The task id.")],
        data_dir: DataDir = None,
        rpc: Rpc = None,
        contract: Contract = None,
        ipfs: Ipfs = None,
        account: AccountIndex = None,
        keystore: Keystore = None,
    ) -> None:
        connection = signer(options(data_dir, rpc, contract, ipfs, account, keystore))
        chain = connection.chain
        if name == "reveal":
            from marketplace.roles.sponsor import reveal

            result = reveal(
                chain, connection.store, connection.account, connection.chain_id, task_id
            )
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


# ------------------------------------------------------------------ helpers


def _dev(settings: Settings, text: str, option: str) -> LocalAccount | None:
    """The devnet account `dev:N` names (None: `text` is not of that form)."""
    if not text.startswith("dev:"):
        return None
    index = text[4:]
    if not index.isdigit():
        raise ConfigError(f"{option} dev:N takes an account number, not {text!r}")
    return dev_account(read_devnet_info(settings.devnet_file), int(index))


def _evaluator(settings: Settings, text: str) -> tuple[str, str]:
    if (account := _dev(settings, text, "--evaluator")) is not None:
        return str(account.address), account_key(account).public_hex
    address, sep, key = text.partition("=")
    if not sep or not is_address(address):
        raise ConfigError(f"--evaluator is ADDRESS=X25519KEY (64 hex digits) or dev:N: {text!r}")
    try:
        public_key_from_hex(key)
    except ValueError as exc:
        raise ConfigError(f"--evaluator {address}: {exc}") from None
    return str(to_checksum_address(address)), key.removeprefix("0x")


def _aggregation(
    settings: Settings, text: str, clip: float, max_miners: int, rounds: str
) -> Aggregation:
    if (account := _dev(settings, text, "--aggregate")) is not None:
        address, key = str(account.address), paillier_hex(account)
    else:
        address, sep, key = text.partition("=")
        if not sep or not is_address(address):
            raise ConfigError(f"--aggregate is ADDRESS=PAILLIER_N (hex) or dev:N: {text!r}")
    parts = [part.strip() for part in rounds.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(f"--aggregate-rounds takes round numbers like 1,2, not {rounds!r}")
    try:
        return Aggregation(
            key_holder=str(to_checksum_address(address)),
            paillier_n=key.removeprefix("0x").lower(),
            rounds=tuple(sorted({int(part) for part in parts})),
            clip=clip,
            max_miners=max_miners,
        )
    except ValidationError as exc:
        raise ConfigError(f"bad --aggregate: {_first(exc)}") from None


def _address(text: str, option: str) -> str:
    if not is_address(text):
        raise ConfigError(f"{option} {text!r} is not an Ethereum address")
    return str(to_checksum_address(text))


@dataclass(frozen=True)
class SpecChoices:
    """The spec options of `task create` besides the schema: name, split, caps and settings."""

    name: str
    split: tuple[int, int, int]  # expertise, data, compute, in basis points
    max_blob_bytes: int
    settings: dict[str, Any]  # TaskSpec fields by name (max_samples_credited, min_gain...)


def _read_spec(path: Path) -> TaskSpec:
    try:
        return TaskSpec.model_validate_json(read_file(path, 64 * 1024))
    except ValidationError as exc:
        raise ConfigError(f"bad task spec: {_first(exc)}") from None


def _spec(choices: SpecChoices, inferred: InferredSchema) -> TaskSpec:
    expertise, data, compute = choices.split
    try:
        return TaskSpec(
            name=choices.name,
            metric=inferred.metric,
            data=inferred.schema,
            split=RewardSplit(expertise_bps=expertise, data_bps=data, compute_bps=compute),
            max_blob_bytes=choices.max_blob_bytes,
            **choices.settings,
        )
    except ValidationError as exc:
        raise ConfigError(f"bad task spec: {_first(exc)}") from None


def _params(
    token: str,
    bounty: str,
    deposit: str,
    start: int,
    rounds: int,
    quorum: int,
    evaluators: list[str],
    windows: tuple[str, str, str, str, str],
) -> TaskParams:
    """The task's on-chain parameters (the commitment and spec digest: `create_task`'s)."""
    round_duration, reveal, evaluation, challenge, claim = map(parse_duration, windows)
    try:
        return TaskParams(
            token=_address(token, "--token"),
            bounty=parse_amount(bounty),
            deposit=parse_amount(deposit),
            validation_commit=bytes(32),
            start=start,
            round_duration=round_duration,
            rounds=rounds,
            reveal_window=reveal,
            evaluation_window=evaluation,
            challenge_window=challenge,
            claim_window=claim,
            evaluators=tuple(evaluators),
            quorum=quorum,
        )
    except ValidationError as exc:
        raise ConfigError(f"bad task parameters: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


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

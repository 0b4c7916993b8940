"""From `sponsor task create`'s options to the task's terms: its on-chain parameters
(`TaskParams`), its spec (`TaskSpec`, the schema inferred from the validation file), its
evaluators' keys and its secure aggregation. Each group of options is an `OptionGroup`: the
command line lists its options where the command names the group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from pydantic import ValidationError

from marketplace.cli.common import OptionGroup, parse_amount, parse_duration
from marketplace.errors import ConfigError
from marketplace.protocol.tasks import account_key, paillier_hex
from marketplace.rules.messages import (
    ZERO_ADDRESS,
    Aggregation,
    Metric,
    RewardSplit,
    TaskParams,
    TaskSpec,
)
from marketplace.rules.schemas import InferredSchema, infer_schema, summary
from marketplace.runtime.config import Settings
from marketplace.runtime.connect import dev_account
from marketplace.runtime.devnet_info import read_devnet_info
from marketplace.storage.files import read_file
from marketplace.wire.keys import public_key_from_hex

SCHEMA = "Data schema (inferred from --validation; give one to override it)"
REWARDS = "Rewards and credit"
AGGREGATION = "Secure aggregation"
DEFAULTS = TaskSpec.model_fields
MAX_SPEC_FILE_BYTES = 64 * 1024


def _default(name: str) -> Any:
    return DEFAULTS[name].default


@dataclass(frozen=True)
class ScheduleOptions(OptionGroup):
    """The money and the clock of a task: with the bounty and the evaluators, its TaskParams."""

    token: Annotated[str, typer.Option(help="An ERC-20 address; default ETH.")] = ZERO_ADDRESS
    deposit: Annotated[str, typer.Option(help="Deposit per submission.")] = "0.01"
    quorum: Annotated[int, typer.Option(help="Evaluators that must agree on a root.")] = 1
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 4
    round_duration: Annotated[str, typer.Option(help="e.g. 1h.")] = "1h"
    reveal_window: Annotated[str, typer.Option(help="Time to reveal after the rounds.")] = "1h"
    evaluation_window: Annotated[str, typer.Option(help="Time to post roots.")] = "1h"
    challenge_window: Annotated[str, typer.Option(help="Wait before finalizing.")] = "10m"
    claim_window: Annotated[str, typer.Option(help="Time to claim.")] = "7d"
    start: Annotated[int, typer.Option(help="Unix time the rounds start (0: now).")] = 0

    def params(self, bounty: str, evaluators: list[str]) -> TaskParams:
        """The task's on-chain parameters (the commitment and spec digest: `create_task`'s)."""
        windows = (
            self.round_duration,
            self.reveal_window,
            self.evaluation_window,
            self.challenge_window,
            self.claim_window,
        )
        round_duration, reveal, evaluation, challenge, claim = map(parse_duration, windows)
        try:
            return TaskParams(
                token=_address(self.token, "--token"),
                bounty=parse_amount(bounty),
                deposit=parse_amount(self.deposit),
                validation_commit=bytes(32),
                start=self.start,
                round_duration=round_duration,
                rounds=self.rounds,
                reveal_window=reveal,
                evaluation_window=evaluation,
                challenge_window=challenge,
                claim_window=claim,
                evaluators=tuple(evaluators),
                quorum=self.quorum,
            )
        except ValidationError as exc:
            raise ConfigError(f"bad task parameters: {_first_error(exc)}") from None


@dataclass(frozen=True)
class SchemaOptions(OptionGroup):
    """What overrides the schema inferred from the validation file."""

    metric: Annotated[
        Metric | None,
        typer.Option(
            help="Default: accuracy if every label is an integer, else negated_sse.",
            rich_help_panel=SCHEMA,
        ),
    ] = None
    features: Annotated[
        int | None,
        typer.Option(
            help="Feature columns (default: every column but the label).",
            min=1,
            rich_help_panel=SCHEMA,
        ),
    ] = None
    classes: Annotated[
        int | None,
        typer.Option(
            help="Classes, for accuracy (default: the largest label + 1; give it when the "
            "validation set lacks a class).",
            rich_help_panel=SCHEMA,
        ),
    ] = None
    label_column: Annotated[
        str | None,
        typer.Option(help="The label column (default: 'label').", rich_help_panel=SCHEMA),
    ] = None

    def infer(self, file: bytes, max_blob_bytes: int) -> InferredSchema:
        """The validation file's schema, with these overrides checked against it."""
        return infer_schema(
            file,
            max_blob_bytes,
            label_column=self.label_column,
            metric=self.metric,
            features=self.features,
            classes=self.classes,
        )


@dataclass(frozen=True)
class RewardOptions(OptionGroup):
    """The spec's rewards, credit rules and blob cap."""

    expertise_bps: Annotated[
        int, typer.Option(help="Architecture share, basis points.", rich_help_panel=REWARDS)
    ] = 2000
    data_bps: Annotated[
        int, typer.Option(help="Data share, basis points.", rich_help_panel=REWARDS)
    ] = 5000
    compute_bps: Annotated[
        int, typer.Option(help="Compute share, basis points.", rich_help_panel=REWARDS)
    ] = 2000
    max_samples_credited: Annotated[
        int,
        typer.Option(
            help="Rows an update is credited for at most, whatever its miner declares (the "
            "compute share and sample-weighted merges).",
            min=1,
            rich_help_panel=REWARDS,
        ),
    ] = _default("max_samples_credited")
    no_update_tolerance: Annotated[
        float,
        typer.Option(
            help="An update whose weights all stay within this of its parent's is no update: "
            "refused, its deposit kept.",
            min=0,
            rich_help_panel=REWARDS,
        ),
    ] = _default("no_update_tolerance")
    min_gain: Annotated[
        int,
        typer.Option(
            help="The least gain credited, in score units (validation rows for accuracy); "
            "smaller gains are noise.",
            min=1,
            rich_help_panel=REWARDS,
        ),
    ] = _default("min_gain")
    max_submissions_per_round: Annotated[
        int,
        typer.Option(
            help="Updates one account may submit per round.", min=1, rich_help_panel=REWARDS
        ),
    ] = _default("max_submissions_per_round")
    class_guard: Annotated[
        int,
        typer.Option(
            help="Accuracy: merge an update whose removal would cut one class's recall by more "
            "than this many basis points (0: off).",
            min=0,
            max=10_000,
            rich_help_panel=REWARDS,
        ),
    ] = _default("class_guard_bps")
    max_blob_mb: Annotated[int, typer.Option(help="Cap on any blob, MiB.")] = 64

    @property
    def max_blob_bytes(self) -> int:
        return self.max_blob_mb * 1024 * 1024

    def spec(self, name: str, inferred: InferredSchema) -> TaskSpec:
        try:
            return TaskSpec(
                name=name,
                metric=inferred.metric,
                data=inferred.schema,
                split=RewardSplit(
                    expertise_bps=self.expertise_bps,
                    data_bps=self.data_bps,
                    compute_bps=self.compute_bps,
                ),
                max_blob_bytes=self.max_blob_bytes,
                max_samples_credited=self.max_samples_credited,
                no_update_tolerance=self.no_update_tolerance,
                min_gain=self.min_gain,
                max_submissions_per_round=self.max_submissions_per_round,
                class_guard_bps=self.class_guard,
            )
        except ValidationError as exc:
            raise ConfigError(f"bad task spec: {_first_error(exc)}") from None


@dataclass(frozen=True)
class AggregationOptions(OptionGroup):
    """Secure aggregation: which evaluator opens the sums, of which rounds."""

    aggregate: Annotated[
        str | None,
        typer.Option(
            help="Secure aggregation rounds, opened by this evaluator: ADDRESS=PAILLIER_N "
            "(from `marketplace key --paillier`) or dev:N. It must be the only evaluator.",
            rich_help_panel=AGGREGATION,
        ),
    ] = None
    clip: Annotated[
        float,
        typer.Option(
            help="With --aggregate: each update value is clipped to +-clip.",
            rich_help_panel=AGGREGATION,
        ),
    ] = 0.05
    max_miners: Annotated[
        int,
        typer.Option(
            help="With --aggregate: miners per round and base (slot headroom).",
            rich_help_panel=AGGREGATION,
        ),
    ] = 16
    aggregate_rounds: Annotated[
        str,
        typer.Option(
            help="With --aggregate: which rounds, e.g. 1,2 (default: every one).",
            rich_help_panel=AGGREGATION,
        ),
    ] = ""

    def aggregation(self, settings: Settings) -> Aggregation | None:
        """The spec's aggregation (None: without --aggregate)."""
        if self.aggregate is None:
            return None
        text, rounds = self.aggregate, self.aggregate_rounds
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
                clip=self.clip,
                max_miners=self.max_miners,
            )
        except ValidationError as exc:
            raise ConfigError(f"bad --aggregate: {_first_error(exc)}") from None


def task_spec(
    validation: Path,
    file: bytes,
    spec_file: Path | None,
    name: str,
    schema: SchemaOptions,
    rewards: RewardOptions,
) -> tuple[TaskSpec, str]:
    """The spec (from --spec, else from the options and the schema the validation file has)
    and where its schema comes from, for people."""
    if spec_file is not None:
        spec = _read_spec(spec_file)
        return spec, f"{summary(spec.data)}, from {spec_file.name}"
    inferred = schema.infer(file, rewards.max_blob_bytes)
    return rewards.spec(name, inferred), inferred.describe(validation.name)


def evaluator_entry(settings: Settings, text: str) -> tuple[str, str]:
    """--evaluator ADDRESS=X25519KEY or dev:N -> (address, key hex)."""
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


def _dev(settings: Settings, text: str, option: str) -> LocalAccount | None:
    """The devnet account `dev:N` names (None: `text` is not of that form)."""
    if not text.startswith("dev:"):
        return None
    index = text[4:]
    if not index.isdigit():
        raise ConfigError(f"{option} dev:N takes an account number, not {text!r}")
    return dev_account(read_devnet_info(settings.devnet_file), int(index))


def _address(text: str, option: str) -> str:
    if not is_address(text):
        raise ConfigError(f"{option} {text!r} is not an Ethereum address")
    return str(to_checksum_address(text))


def _read_spec(path: Path) -> TaskSpec:
    try:
        return TaskSpec.model_validate_json(read_file(path, MAX_SPEC_FILE_BYTES))
    except ValidationError as exc:
        raise ConfigError(f"bad task spec: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    """A pydantic error's first problem in one line: where, then what."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])

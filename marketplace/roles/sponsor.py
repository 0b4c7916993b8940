"""What sponsors and data scientists do, as functions the CLIs and the demo share.

- `create_task`: seal the validation set to the evaluators (and the sponsor, so the sponsor
  can always recover the file and salt for the reveal from the store alone), publish the spec,
  commit, escrow.
- `reveal`: recover the sealed set, publish it in the clear, reveal the salt.
- `pull_model`: after the root is agreed, open the winner the evaluators sealed to the sponsor,
  check it against the scored node and the validation set, and make its model card.
- `propose_architecture`: a public bundle of a `ModelSpec` and its initial weights.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from marketplace.chain.events import TxResult
from marketplace.delivered.card import CardScore, build_card
from marketplace.delivered.card_check import checked_delivery
from marketplace.delivered.delivery import open_delivery
from marketplace.delivered.modeldir import ModelFiles
from marketplace.errors import ConfigError, DeliveryError, MarketplaceError, OverBudget
from marketplace.protocol.aggregation import packing
from marketplace.protocol.reports import agreed_checks
from marketplace.protocol.tasks import (
    SALT_BYTES,
    account_key,
    nodes_by_id,
    open_validation,
    publish_json,
    read_spec,
    seal_validation,
    spec_bytes,
    validation_file,
)
from marketplace.rules.datafiles import load_dataset, load_validation
from marketplace.rules.evaluation import check_budget, score
from marketplace.rules.messages import (
    ZERO_ADDRESS,
    Aggregation,
    NodeRecord,
    TaskParams,
    TaskSpec,
)
from marketplace.rules.models import ModelSpec
from marketplace.runtime.connect import Connection
from marketplace.wire.architecture import encode_architecture
from marketplace.wire.crypto import sha256, validation_commitment
from marketplace.wire.keys import public_key_from_hex
from marketplace.wire.report import ReportCheck
from marketplace.wire.secagg_packing import SecAggError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CreatedTask:
    task_id: int
    spec_cid: str
    validation_cid: str
    result: TxResult


def create_task(
    sponsor: Connection,
    validation: bytes,
    spec: TaskSpec,
    params: TaskParams,
    evaluator_keys: Sequence[str],
) -> CreatedTask:
    """Create a task whose validation set is `validation` (CSV or .npz bytes).

    `spec` and `params` are completed here: the evaluator keys, the sponsor's key, the sealed
    validation set and its row count (what one scoring is priced at) go in the spec; its digest
    and CID, and the commitment, in params.

    Raises:
        ConfigError: the validation file does not fit the spec's data schema, the sponsor
            is one of the evaluators, or the evaluator keys do not match them one for one.
        DataFormatError: the validation file is malformed.
    """
    if any(e.lower() == sponsor.address.lower() for e in params.evaluators):
        raise ConfigError("the sponsor cannot be one of its own task's evaluators")
    if len(evaluator_keys) != len(params.evaluators):
        raise ConfigError(
            f"{len(params.evaluators)} evaluators but {len(evaluator_keys)} evaluator keys"
        )
    try:
        readers = [public_key_from_hex(key) for key in evaluator_keys]
    except ValueError as exc:
        raise ConfigError(f"bad evaluator key: {exc}") from None
    if spec.aggregation is not None:
        _check_aggregation(spec.aggregation, params)
    rows = load_dataset(validation, spec.data, spec.max_blob_bytes)  # refuse a bad file now
    if len(rows) == 0:
        raise ConfigError("the validation file has no rows")
    sponsor_key = account_key(sponsor.account)
    salt = secrets.token_bytes(SALT_BYTES)
    sealed = seal_validation(
        validation, salt, [*readers, sponsor_key.public_bytes], sponsor.account, sponsor.chain_id
    )
    validation_cid = sponsor.store.put(sealed)
    full_spec = spec.model_copy(
        update={
            "evaluator_keys": tuple(key.hex() for key in readers),
            "sponsor_key": sponsor_key.public_hex,
            "validation_cid": validation_cid,
            "validation_rows": len(rows),
        }
    )
    TaskSpec.model_validate(full_spec.model_dump())  # the completed spec is still valid
    spec_cid, spec_digest = publish_json(sponsor.store, spec_bytes(full_spec))
    full_params = params.model_copy(
        update={
            "validation_commit": validation_commitment(sha256(validation), salt),
            "spec_digest": spec_digest,
            "spec_cid": spec_cid,
        }
    )
    if full_params.token != ZERO_ADDRESS:
        sponsor.chain.approve_token(sponsor.address, full_params.token, full_params.bounty)
    result = sponsor.chain.create_task(sponsor.address, full_params)
    assert result.value is not None
    return CreatedTask(result.value, spec_cid, validation_cid, result)


def _check_aggregation(aggregation: Aggregation, params: TaskParams) -> None:
    """Only the key holder can open a round's sum, so it is the task's only evaluator: no other
    could confirm its merges (a threshold Paillier key would lift this)."""
    if len(params.evaluators) != 1:
        raise ConfigError(
            f"secure aggregation needs exactly one evaluator, the key holder, not "
            f"{len(params.evaluators)}"
        )
    if params.evaluators[0].lower() != aggregation.key_holder.lower():
        raise ConfigError(
            f"the aggregation's key holder {aggregation.key_holder} is not the task's evaluator "
            f"{params.evaluators[0]}"
        )
    try:
        packing(aggregation)
    except SecAggError as exc:
        raise ConfigError(f"bad aggregation parameters: {exc}") from None


def reveal(sponsor: Connection, task_id: int) -> TxResult:
    """Publish the task's validation file and reveal its salt (from the sealed copy)."""
    spec = read_spec(sponsor.chain, sponsor.store, task_id)
    file, salt = open_validation(
        sponsor.chain, sponsor.store, spec, task_id, account_key(sponsor.account), sponsor.chain_id
    )
    cid = sponsor.store.put(file)
    return sponsor.chain.reveal_validation(sponsor.address, task_id, sha256(file), salt, cid)


def propose_architecture(
    scientist: Connection,
    task_id: int,
    model: ModelSpec,
    weights: Mapping[str, torch.Tensor],
) -> TxResult:
    """Publish the architecture's bundle and propose it (paying the deposit).

    Raises:
        ConfigError: the bundle is over the task's size cap, or scoring the model costs more
            than the task's budget: the evaluators would refuse it and keep the deposit.
    """
    bundle = encode_architecture(model, weights)
    spec = read_spec(scientist.chain, scientist.store, task_id)
    try:
        check_budget(model, spec)
    except OverBudget as exc:
        raise ConfigError(f"the task's evaluators would refuse this architecture: {exc}") from None
    if len(bundle) > spec.max_blob_bytes:
        raise ConfigError(
            f"the bundle is {len(bundle):,} bytes, over the task's cap of {spec.max_blob_bytes:,}"
        )
    cid = scientist.store.put(bundle)
    return scientist.chain.propose_architecture(scientist.address, task_id, sha256(bundle), cid)


def pull_model(
    sponsor: Connection,
    task_id: int,
    test: bytes | None = None,
) -> ModelFiles:
    """The model delivered to `sponsor`, from the first report of the agreed root whose
    delivery holds: the public checks (`delivery_mismatch`), the envelope opened with the
    sponsor's key, its digest, and its score on the validation set equal to the report's.
    With `test` (a file of the task's schema), the card carries the test score too.

    Raises:
        IntegrityError: no root is agreed yet.
        DeliveryError: no delivery of the agreed root holds, each one's reason (`not a
            recipient` among them when `sponsor` is not the task's sponsor).
        DataFormatError: the test file does not fit the task's schema.
    """
    spec = read_spec(sponsor.chain, sponsor.store, task_id)
    records = nodes_by_id(sponsor.chain, task_id)
    reasons = []
    for agreed in agreed_checks(sponsor.chain, sponsor.store, task_id):
        try:
            model, weights = _opened_winner(sponsor, spec, records, agreed)
        except MarketplaceError as exc:
            reasons.append(f"{agreed.posted.evaluator}: {exc}")
            continue
        tested = _test_score(test, spec, model, weights)
        return ModelFiles(
            model, weights, build_card(sponsor.chain, spec, records, agreed, model, tested)
        )
    raise DeliveryError(
        f"no delivery of task {task_id}'s winner opens for {sponsor.address}: "
        + ("; ".join(reasons) or "no report was posted with the agreed root")
    )


def _opened_winner(
    sponsor: Connection,
    spec: TaskSpec,
    records: Mapping[int, NodeRecord],
    agreed: ReportCheck,
) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The winner `agreed` delivers, opened and checked (MarketplaceError saying why not):
    the public checks, the sponsor's envelope and digest, and the report's validation score."""
    delivered = checked_delivery(sponsor.store, spec, records, agreed)
    task_id, model = delivered.report.task_id, delivered.model
    key = account_key(sponsor.account)
    cap = spec.max_blob_bytes
    evaluator = agreed.posted.evaluator
    weights = open_delivery(
        sponsor.store, delivered.delivery, evaluator, key, model, task_id, sponsor.chain_id, cap
    )
    file = validation_file(sponsor.chain, sponsor.store, spec, task_id, key, sponsor.chain_id)
    if file is None:
        raise DeliveryError(f"task {task_id}'s validation set is not revealed")
    said = next(n.score for n in delivered.report.nodes if n.node_id == delivered.winner)
    mine = score(model, weights, load_validation(file, spec), spec.metric)
    if mine != said:
        raise DeliveryError(f"it scores {mine} on the validation set, the report {said}")
    return model, weights


def _test_score(
    test: bytes | None, spec: TaskSpec, model: ModelSpec, weights: Mapping[str, torch.Tensor]
) -> CardScore | None:
    if test is None:
        return None
    dataset = load_dataset(test, spec.data, max(spec.max_blob_bytes, len(test)))
    return CardScore(
        file_sha256=sha256(test).hex(),
        rows=len(dataset),
        score=score(model, weights, dataset, spec.metric),
    )

"""Validity checks: is a node's blob what the chain says it is, and a model the task can score?

Each `check_*` fetches a node's blob (capped, against its CID and the digest the chain
recorded), opens and decodes it, and returns its `Verdict` (`marketplace.protocol.verdicts`,
which lists the reason codes). The checks never raise for bad bytes a submitter chose: each
refusal becomes an invalid verdict. Only two things raise:

- a store that cannot be reached (`StoreUnavailable`) or answers an error that says nothing
  about the blob (a bare `StorageError`): not the submitter's fault, so the evaluator retries
  later instead of forfeiting a deposit;
- a caller's mistake (`ValueError`): a node of another kind, another task, parent weights
  that do not fit the spec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    EnvelopeError,
    IntegrityError,
    OverBudget,
    SpecError,
    WeightsError,
)
from marketplace.protocol.verdicts import Refusal, Verdict, weights_code
from marketplace.rules.evaluation import check_budget, check_schema_fits
from marketplace.rules.merge import is_no_update
from marketplace.rules.messages import DataSchema, Metric, NodeKind, NodeRecord, TaskSpec
from marketplace.rules.models import ModelSpec, check_weights
from marketplace.storage.stores import BlobStore
from marketplace.wire.architecture import decode_architecture
from marketplace.wire.codec import decode_weights, to_arrays
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import envelope_author, open_envelope
from marketplace.wire.keys import X25519KeyPair
from marketplace.wire.secagg_packing import SecAggError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ReaderKey = X25519PrivateKey | X25519KeyPair | bytes
"""The evaluator's X25519 private key, in any form `open_envelope` takes."""


class _Refused(Exception):
    """Internal: a check failed; `check_*` turns it into an invalid Verdict."""

    def __init__(self, code: Refusal, detail: str = "") -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


# ------------------------------------------------------------------------------- updates


def check_update(
    record: NodeRecord,
    store: BlobStore,
    reader_key: ReaderKey,
    spec: ModelSpec,
    parent_weights: Mapping[str, torch.Tensor],
    task_id: int,
    tolerance: float,
    max_size: int,
    *,
    chain_id: int = 0,
) -> Verdict:
    """Decide an update node: fetch, digest, open the envelope, decode, compare to the parent.

    Args:
        record: the node as the chain recorded it (kind UPDATE, one parent).
        store: where its blob lives.
        reader_key: the evaluator's X25519 private key (the envelope must be sealed to it).
        spec: the architecture the update must fit.
        parent_weights: the weights of `record.parents[0]`, already checked.
        task_id: the task being evaluated (must be `record.task_id`).
        tolerance: max |w - parent| under which the update is "no update".
        max_size: the cap on the blob, the envelope and the plaintext weights, in bytes.
        chain_id: the chain the envelope is bound to (0: none).

    Raises:
        StoreUnavailable, StorageError: the store failed for a reason that is not the blob's.
        ValueError: a caller's mistake (see the module docstring).
    """
    if record.kind is not NodeKind.UPDATE:
        raise ValueError(f"node {record.node_id} is a {record.kind.name}, not an UPDATE")
    if len(record.parents) != 1:
        raise ValueError(f"update {record.node_id} has {len(record.parents)} parents, not 1")
    if record.task_id != task_id:
        raise ValueError(f"node {record.node_id} belongs to task {record.task_id}, not {task_id}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a number >= 0, not {tolerance}")
    try:
        check_weights(spec, parent_weights)
    except WeightsError as exc:
        raise ValueError(f"the parent weights do not fit the spec: {exc}") from None
    try:
        blob = _fetch(record, store, max_size)
        plaintext = _open(record, blob, reader_key, task_id, max_size, chain_id)
        weights = _decode(plaintext, spec, max_size)
        if is_no_update(to_arrays(weights), to_arrays(parent_weights), tolerance):
            raise _Refused(
                Refusal.NO_UPDATE,
                f"every weight is within {tolerance:g} of parent {record.parents[0]}'s",
            )
    except _Refused as refused:
        return _refuse(record, refused)
    return Verdict.accepted(record.node_id, weights)


def check_aggregate_update(
    record: NodeRecord,
    store: BlobStore,
    decode: Callable[[bytes], object],
    max_size: int,
) -> Verdict:
    """Decide a secure aggregation update: fetch, digest, then `decode` (the round's
    `secagg.decode_submission`: size first, key, round, layout, units mod n**2). Valid means
    well-formed: what it holds is seen only in its group's sum."""
    try:
        blob = _fetch(record, store, max_size)
        try:
            decode(blob)
        except SecAggError as exc:
            raise _Refused(Refusal.WEIGHTS, f"not a submission to this round: {exc}") from None
    except _Refused as refused:
        return _refuse(record, refused)
    return Verdict.sealed_update(record.node_id)


# ------------------------------------------------------------------------- architectures


def check_architecture(
    record: NodeRecord,
    store: BlobStore,
    max_size: int,
    schema: DataSchema,
    metric: Metric,
    *,
    task: TaskSpec | None = None,
) -> tuple[Verdict, ModelSpec | None]:
    """Decide an architecture node: fetch, digest, `decode_architecture`, then whether the spec
    fits the task (`check_schema_fits`: input dtype and width, output width for `metric`) and,
    given the `task`, its scoring budget (`check_budget`: refused `over-budget`).

    Returns:
        The verdict and, when it is valid, the spec (the verdict holds the initial weights).

    Raises:
        StoreUnavailable, StorageError: the store failed for a reason that is not the blob's.
        ValueError: `record` is not an architecture.
    """
    if record.kind is not NodeKind.ARCHITECTURE:
        raise ValueError(f"node {record.node_id} is a {record.kind.name}, not an ARCHITECTURE")
    try:
        blob = _fetch(record, store, max_size)
        try:
            spec, weights = decode_architecture(blob, max_size)
            check_schema_fits(spec, schema, metric)
            if task is not None:
                check_budget(spec, task)
        except OverBudget as exc:
            raise _Refused(Refusal.OVER_BUDGET, str(exc)) from None
        except SpecError as exc:
            raise _Refused(Refusal.SPEC, str(exc)) from None
        except WeightsError as exc:
            raise _weights_refusal(exc) from None
    except _Refused as refused:
        return _refuse(record, refused), None
    return Verdict.accepted(record.node_id, weights), spec


# ------------------------------------------------------------------------------- helpers


def _fetch(record: NodeRecord, store: BlobStore, max_size: int) -> bytes:
    """The node's blob, capped, checked against its CID and the digest the chain recorded."""
    try:
        blob = store.get(record.cid, max_size)
    except BlobNotFound as exc:
        raise _Refused(Refusal.BLOB_MISSING, str(exc)) from None
    except BlobTooLarge as exc:
        raise _Refused(Refusal.TOO_LARGE, str(exc)) from None
    except IntegrityError as exc:
        raise _Refused(Refusal.CID_MISMATCH, str(exc)) from None
    # StoreUnavailable and any other StorageError propagate: not the submitter's fault.
    actual = sha256(blob)
    if actual != record.digest:
        raise _Refused(
            Refusal.DIGEST_MISMATCH,
            f"the blob's sha256 is {actual.hex()}, the chain recorded {record.digest.hex()}",
        )
    return blob


def _open(
    record: NodeRecord, blob: bytes, key: ReaderKey, task_id: int, max_size: int, chain_id: int
) -> bytes:
    """The plaintext, once the envelope is signed by the node's author and bound to the node."""
    try:
        signer = envelope_author(blob)
    except EnvelopeError as exc:
        raise _Refused(Refusal.UNDECRYPTABLE, str(exc)) from None
    if signer.lower() != record.author.lower():
        raise _Refused(
            Refusal.AUTHOR_BINDING, f"signed by {signer}, the node's author is {record.author}"
        )
    try:
        return open_envelope(
            blob,
            key,
            expected_author=record.author,
            task_id=task_id,
            parent=record.parents[0],
            kind="update",
            max_size=max_size,
            chain_id=chain_id,
        )
    except EnvelopeError as exc:
        message = str(exc)
        code = Refusal.BINDING if message.startswith("bound to another") else Refusal.UNDECRYPTABLE
        raise _Refused(code, message) from None


def _decode(plaintext: bytes, spec: ModelSpec, max_size: int) -> dict[str, torch.Tensor]:
    try:
        return decode_weights(plaintext, spec, max_size)
    except WeightsError as exc:
        raise _weights_refusal(exc) from None


def _weights_refusal(exc: WeightsError) -> _Refused:
    return _Refused(weights_code(exc), str(exc))


def _refuse(record: NodeRecord, refused: _Refused) -> Verdict:
    log.info("node %d by %s is invalid: %s", record.node_id, record.author, refused)
    return Verdict.refused(record.node_id, refused.code, refused.detail)

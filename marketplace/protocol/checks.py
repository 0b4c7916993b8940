"""Validity checks: is a node's blob what the chain says it is, and a model the task can score?

An evaluator decides every node before scoring it; an invalid node forfeits its deposit
(DESIGN.md, "The reward rule"). The checks never raise for bad bytes a submitter chose: each
refusal becomes an invalid `Verdict` whose `reason` starts with a stable code
(`Verdict.code`), then ": " and a readable detail. Only two things raise:

- a store that cannot be reached (`StoreUnavailable`) or answers an error that says nothing
  about the blob (a bare `StorageError`): not the submitter's fault, so the evaluator retries
  later instead of forfeiting a deposit;
- a caller's mistake (`ValueError`): a node of another kind, another task, parent weights
  that do not fit the spec.

Reason codes, in the order an update is checked:

    blob-missing     no blob under the CID (or the CID is not a base32 CIDv1)
    too-large        the blob is over the size cap (the store stops reading at the cap)
    cid-mismatch     the bytes do not hash to the CID (a CID not made the way the market
                     makes them: CIDv1, raw leaves, 256 KiB chunks, balanced layout)
    digest-mismatch  sha256 of the blob is not the digest the chain recorded
    undecryptable    not an envelope, truncated, malformed, tampered, or not sealed to us
    author-binding   signed by an account other than the node's author
    binding          sealed for another task, parent, kind or chain
    spec             (architectures) no spec in the bundle, a spec that is refused, or one
                     that does not fit the task's data schema and metric (`check_schema_fits`);
                     (updates, merges) built on an invalid architecture
    over-budget      (architectures) scoring it once costs more multiply-adds than the task's
                     budget (`evaluation.check_budget`): refused before anyone trains it
    weights          not safetensors, wrong names, shapes or dtypes
    non-finite       a NaN or an infinity in the weights
    no-update        every weight within `tolerance` of the parent's

Two more codes come from the evaluator, not from a node's bytes: `over-cap` (an account's
update past the task's `max_submissions_per_round` in its round, in node id order) and
`scoring-timeout` (scoring the node took longer than the task's `scoring_seconds`).

Architecture bundles are public (not sealed): canonical safetensors bytes
(`codec.encode_weights`) of the initial weights, whose `__metadata__` maps "model_spec" to the
spec's canonical JSON (`ModelSpec.to_json`). Equal specs and weights give equal bytes, so the
digest the chain records is reproducible. Other metadata keys are ignored by readers.

Past its check, a node's bytes can still fail when they are used (scored, merged): `NODE_ERRORS`
are the errors such bytes raise, and `refusal` turns one into the node's invalid verdict, so
a caller catches exactly those at the node's boundary and lets every other error through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    EnvelopeError,
    IntegrityError,
    OverBudget,
    ScoringTimeout,
    SpecError,
    WeightsError,
)
from marketplace.rules.evaluation import check_budget, check_schema_fits
from marketplace.rules.merge import is_no_update
from marketplace.rules.messages import DataSchema, Metric, NodeKind, NodeRecord, TaskSpec
from marketplace.rules.models import ModelSpec, check_weights
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import MAX_HEADER_BYTES, decode_weights, encode_weights
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import envelope_author, open_envelope
from marketplace.wire.keys import X25519KeyPair
from marketplace.wire.secagg_packing import SecAggError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SPEC_METADATA_KEY = "model_spec"
"""The `__metadata__` key of an architecture bundle that holds the spec's JSON."""

ReaderKey = X25519PrivateKey | X25519KeyPair | bytes
"""The evaluator's X25519 private key, in any form `open_envelope` takes."""


class Refusal(StrEnum):
    """Why a node is invalid: the stable code a `Verdict.reason` starts with."""

    BLOB_MISSING = "blob-missing"
    TOO_LARGE = "too-large"
    CID_MISMATCH = "cid-mismatch"
    DIGEST_MISMATCH = "digest-mismatch"
    UNDECRYPTABLE = "undecryptable"
    AUTHOR_BINDING = "author-binding"
    BINDING = "binding"
    SPEC = "spec"
    WEIGHTS = "weights"
    NON_FINITE = "non-finite"
    NO_UPDATE = "no-update"
    COPY = "copy"  # the same weights as an earlier update (issue 15: one update, one voice)
    OVER_BUDGET = "over-budget"
    OVER_CAP = "over-cap"
    SCORING_TIMEOUT = "scoring-timeout"


_CODES = frozenset(code.value for code in Refusal)


@dataclass(frozen=True)
class Verdict:
    """An evaluator's decision on one node.

    Attributes:
        node_id: the node decided.
        valid: whether the node keeps its deposit and may be scored.
        reason: "" when valid; else a `Refusal` code, ": " and a detail.
        weights: the decoded weights (parameter order) when valid, else None.
    """

    node_id: int
    valid: bool
    reason: str = ""
    weights: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)
    sealed: bool = False  # a valid secure aggregation update: well-formed, never seen alone

    def __post_init__(self) -> None:
        if self.valid != (self.reason == ""):
            raise ValueError("a verdict has a reason exactly when it is invalid")
        if self.sealed and (not self.valid or self.weights is not None):
            raise ValueError("a sealed verdict is valid and carries no weights")
        if not self.sealed and self.valid != (self.weights is not None):
            raise ValueError("a verdict carries weights exactly when it is valid")
        if self.reason and self.reason.partition(":")[0] not in _CODES:
            raise ValueError(f"a reason starts with a Refusal code, not {self.reason!r}")

    @classmethod
    def accepted(cls, node_id: int, weights: dict[str, torch.Tensor]) -> Verdict:
        return cls(node_id, True, "", weights)

    @classmethod
    def sealed_update(cls, node_id: int) -> Verdict:
        return cls(node_id, True, "", None, sealed=True)

    @classmethod
    def refused(cls, node_id: int, code: Refusal, detail: str = "") -> Verdict:
        return cls(node_id, False, f"{code.value}: {detail}" if detail else code.value)

    @property
    def code(self) -> Refusal | None:
        """The reason's code (None when valid)."""
        return Refusal(self.reason.partition(":")[0]) if self.reason else None


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
        if is_no_update(_arrays(weights), _arrays(parent_weights), tolerance):
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


def encode_architecture(spec: ModelSpec, weights: Mapping[str, torch.Tensor]) -> bytes:
    """The public bundle of an architecture: canonical safetensors of `weights`, with the
    spec's JSON under `__metadata__["model_spec"]`.

    Raises:
        WeightsError: `weights` are not exactly the spec's names, shapes and float32.
    """
    check_weights(spec, weights)
    return encode_weights(weights, {SPEC_METADATA_KEY: spec.to_json().decode()})


def decode_architecture(
    blob: bytes | bytearray | memoryview, max_size: int
) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The spec and initial weights of an untrusted bundle (the format of `encode_architecture`).

    Order: the size cap, the safetensors header, the spec in its metadata (size cap, schema,
    shapes), then the weights against that spec (names, shapes, dtypes, finite values).

    Raises:
        WeightsError: over `max_size`, not safetensors, or weights that do not fit the spec.
        SpecError: no "model_spec" in the metadata, or a spec that is refused.
    """
    size = memoryview(blob).nbytes
    if size > max_size:
        raise WeightsError(f"the bundle is {size:,} bytes, over the cap of {max_size:,}")
    data = bytes(blob)
    spec = ModelSpec.from_json(_spec_text(data))
    return spec, decode_weights(data, spec, max_size)


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


# ------------------------------------------------------------------------ past the check

NODE_ERRORS = (
    BlobNotFound,
    BlobTooLarge,
    IntegrityError,
    SpecError,
    WeightsError,
    EnvelopeError,
    SecAggError,
    ScoringTimeout,
)
"""What a node's bytes can raise when used (or take too long to score); any other error (a
store that cannot be reached, the chain, a bug) is not the node's fault and must propagate."""


def refusal(node_id: int, exc: Exception) -> Verdict:
    """The invalid verdict of a node whose bytes raised `exc`, one of `NODE_ERRORS`."""
    if isinstance(exc, WeightsError):
        refused = _weights_refusal(exc)
        return Verdict.refused(node_id, refused.code, refused.detail)
    codes: tuple[tuple[type[Exception], Refusal], ...] = (
        (BlobNotFound, Refusal.BLOB_MISSING),
        (BlobTooLarge, Refusal.TOO_LARGE),
        (IntegrityError, Refusal.CID_MISMATCH),
        (OverBudget, Refusal.OVER_BUDGET),  # before SpecError, its base
        (SpecError, Refusal.SPEC),
        (EnvelopeError, Refusal.UNDECRYPTABLE),
        (SecAggError, Refusal.WEIGHTS),
        (ScoringTimeout, Refusal.SCORING_TIMEOUT),
    )
    for kind, code in codes:
        if isinstance(exc, kind):
            return Verdict.refused(node_id, code, str(exc))
    raise TypeError(f"{type(exc).__name__} is not one of the node errors") from exc


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
    """codec reports every refusal as WeightsError; non-finite values get their own code."""
    message = str(exc)
    if "non-finite" in message:
        return _Refused(Refusal.NON_FINITE, message)
    if "over the cap" in message:
        return _Refused(Refusal.TOO_LARGE, message)
    return _Refused(Refusal.WEIGHTS, message)


def _spec_text(blob: bytes) -> str:
    """The spec JSON in a bundle's safetensors header (every other header check: codec's)."""
    if len(blob) < 8:
        raise WeightsError(f"not safetensors: {len(blob)} bytes, too short for a header")
    length = int.from_bytes(blob[:8], "little")
    if length > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise WeightsError(f"not safetensors: the header length field says {length:,} bytes")
    try:
        header: Any = json.loads(blob[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WeightsError(f"not safetensors: the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WeightsError("not safetensors: the header is not a JSON object")
    metadata = header.get("__metadata__")
    text = metadata.get(SPEC_METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise SpecError(f'the bundle has no "{SPEC_METADATA_KEY}" string in its __metadata__')
    return text


def _arrays(weights: Mapping[str, torch.Tensor]) -> dict[str, npt.NDArray[np.float32]]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in weights.items()}


def _refuse(record: NodeRecord, refused: _Refused) -> Verdict:
    log.info("node %d by %s is invalid: %s", record.node_id, record.author, refused)
    return Verdict.refused(record.node_id, refused.code, refused.detail)

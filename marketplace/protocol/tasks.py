"""A task's off-chain protocol, shared by every role: the spec on IPFS, the sealed validation
set, the readers a merge is sealed to, and reading any node's weights.

Keys. Every account has an account-wide X25519 key, `account_key` (HKDF of its Ethereum key,
task 0): evaluators publish it, and the sponsor's goes in the task spec, because neither knows
the task id before the task exists. Miners register a per-task key (`miner_key`) with their
first submission. A secure aggregation task's key holder has a Paillier key (`paillier_key`).
Nothing here holds a secret the account's Ethereum key cannot rebuild.

The validation set is sealed to the evaluators and the sponsor as `salt || file` (kind
"validation", task 0: the task id is unknown when it is sealed); a reader checks it against
the task's on-chain commitment, which binds it to the task.

A merge's plaintext is the canonical safetensors of its weights with metadata `round` and
`round_score` (the evaluator's validation score, so miners can pick the best merge of a
round); its plaintext digest, which evaluators confirm, is `weights_digest` of the weights
alone. It is sealed (kind "merge", parent = its last parent) to the evaluators and every miner
registered when it is posted: the miners build on it. The sponsor gets the winner alone, at
settlement (`delivery.py`).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount
from phe.paillier import PaillierPrivateKey, PaillierPublicKey
from pydantic import ValidationError

from marketplace.chain.client import ChainClient
from marketplace.chain.events import (
    EncryptionKeyRegistered,
    MergeConfirmed,
    TaskCreated,
    ValidationRevealed,
)
from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    EnvelopeError,
    IntegrityError,
    SpecError,
    ValidationUnavailable,
)
from marketplace.rules.dag import architecture_of
from marketplace.rules.messages import NodeKind, NodeRecord, Score, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.rules.rewards import unconfirmed_merges
from marketplace.storage.stores import BlobStore
from marketplace.wire.architecture import decode_architecture
from marketplace.wire.codec import decode_weights, encode_weights
from marketplace.wire.crypto import sha256, validation_commitment
from marketplace.wire.envelope import envelope_recipients, open_envelope, seal
from marketplace.wire.keys import X25519KeyPair, public_key_from_hex
from marketplace.wire.secagg import derive_key

if TYPE_CHECKING:
    import torch

MAX_TASK_SPEC_BYTES = 64 * 1024
SALT_BYTES = 32
ROUND_KEY = "round"
ROUND_SCORE_KEY = "round_score"


def account_key(account: LocalAccount) -> X25519KeyPair:
    """The account-wide X25519 key of an evaluator or a sponsor."""
    return X25519KeyPair.derive(bytes(account.key), 0)


def miner_key(account: LocalAccount, task_id: int) -> X25519KeyPair:
    """The X25519 key a miner registers for `task_id` with its first submission (and joins
    secure aggregation rounds with)."""
    return X25519KeyPair.derive(bytes(account.key), task_id)


def paillier_key(account: LocalAccount) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """The Paillier key of a secure aggregation key holder (an evaluator): rebuilt from its
    Ethereum key, like its X25519 key. Its n, in hex, goes in the spec's `aggregation`."""
    return derive_key(bytes(account.key))


def paillier_hex(account: LocalAccount) -> str:
    return format(paillier_key(account)[0].n, "x")


# ------------------------------------------------------------------------------- the spec


def publish_json(store: BlobStore, data: bytes) -> tuple[str, bytes]:
    """Store public bytes; (CID, sha256)."""
    return store.put(data), sha256(data)


def spec_bytes(spec: TaskSpec) -> bytes:
    return spec.model_dump_json().encode()


def read_spec(chain: ChainClient, store: BlobStore, task_id: int) -> TaskSpec:
    """The task spec the chain points at, checked against its on-chain digest.

    Raises:
        SpecError: the blob is not the digest the chain recorded, or not a valid spec.
        StorageError: the blob cannot be fetched.
    """
    created = task_created(chain, task_id)
    cid, digest = created.spec_cid, created.spec_digest
    data = store.get(cid, MAX_TASK_SPEC_BYTES)
    if sha256(data) != digest:
        raise SpecError(f"task {task_id}'s spec {cid} does not match its on-chain digest")
    try:
        return TaskSpec.model_validate_json(data)
    except ValidationError as exc:
        raise SpecError(f"task {task_id}'s spec is not a valid task spec: {exc}") from None


_CREATED: weakref.WeakKeyDictionary[ChainClient, dict[int, TaskCreated]] = (
    weakref.WeakKeyDictionary()
)


def task_created(chain: ChainClient, task_id: int) -> TaskCreated:
    """The task's TaskCreated event (immutable, so cached per client)."""
    cache = _CREATED.setdefault(chain, {})
    if task_id not in cache:
        events = chain.events(TaskCreated, task_id=task_id)
        if not events:
            raise SpecError(f"there is no task {task_id}")
        cache[task_id] = events[0]
    return cache[task_id]


def evaluator_keys(spec: TaskSpec) -> list[bytes]:
    if not spec.evaluator_keys:
        raise SpecError("the task spec lists no evaluator keys: updates cannot be sealed")
    return [public_key_from_hex(key) for key in spec.evaluator_keys]


# ------------------------------------------------------------------------- the validation set


def seal_validation(
    file: bytes, salt: bytes, readers: Sequence[bytes], sponsor: LocalAccount, chain_id: int
) -> bytes:
    """The validation set sealed to `readers` (the evaluators and the sponsor)."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt is {SALT_BYTES} bytes, not {len(salt)}")
    return seal(
        salt + file, readers, sponsor, task_id=0, parent=0, kind="validation", chain_id=chain_id
    )


def open_validation(
    chain: ChainClient,
    store: BlobStore,
    spec: TaskSpec,
    task_id: int,
    key: X25519KeyPair,
    chain_id: int,
) -> tuple[bytes, bytes]:
    """(file, salt) of the sealed validation set, checked against the on-chain commitment.

    Raises:
        EnvelopeError: not sealed to `key`, or not by the sponsor.
        IntegrityError: the file and salt do not match the commitment.
    """
    task = chain.task(task_id)
    blob = store.get(spec.validation_cid, spec.max_blob_bytes)
    plain = open_envelope(
        blob,
        key,
        expected_author=task.sponsor,
        task_id=0,
        parent=0,
        kind="validation",
        max_size=spec.max_blob_bytes,
        chain_id=chain_id,
    )
    salt, file = plain[:SALT_BYTES], plain[SALT_BYTES:]
    if validation_commitment(sha256(file), salt) != task.validation_commit:
        raise IntegrityError(f"task {task_id}'s sealed validation set is not the committed one")
    return file, salt


def revealed_validation(
    chain: ChainClient, store: BlobStore, task_id: int, max_size: int
) -> bytes | None:
    """The revealed validation file (checked against its revealed digest), None if unrevealed."""
    events = chain.events(ValidationRevealed, task_id=task_id)
    if not events:
        return None
    file = store.get(events[0].cid, max_size)
    if sha256(file) != events[0].file_digest:
        raise IntegrityError(
            f"task {task_id}'s revealed validation file is not the revealed digest"
        )
    return file


def validation_file(
    chain: ChainClient,
    store: BlobStore,
    spec: TaskSpec,
    task_id: int,
    key: X25519KeyPair | None,
    chain_id: int,
) -> bytes | None:
    """The revealed validation file (None before the reveal): from its revealed CID, else the
    copy sealed to `key` (an evaluator's or the sponsor's) when its sha256 is the revealed
    digest, so a sponsor that reveals a CID nobody stored cannot stop settlement.

    Raises:
        ValidationUnavailable: neither gives the file (with both reasons).
    """
    events = chain.events(ValidationRevealed, task_id=task_id)
    if not events:
        return None
    revealed = events[0]
    try:
        return revealed_validation(chain, store, task_id, spec.max_blob_bytes)
    except (BlobNotFound, BlobTooLarge, IntegrityError) as exc:
        unreadable = f"the revealed file {revealed.cid} cannot be read ({exc})"
    if key is None:
        raise ValidationUnavailable(unreadable)
    try:
        sealed, _ = open_validation(chain, store, spec, task_id, key, chain_id)
    except (EnvelopeError, BlobNotFound, BlobTooLarge, IntegrityError) as exc:
        raise ValidationUnavailable(f"{unreadable}, and the sealed copy: {exc}") from None
    if sha256(sealed) != revealed.file_digest:
        raise ValidationUnavailable(f"{unreadable}, and the sealed copy is another file")
    return sealed


# ------------------------------------------------------------------------------ the tree


def registered_keys(chain: ChainClient, task_id: int) -> dict[str, bytes]:
    """Account -> the X25519 key it registered for the task (the latest registration)."""
    keys: dict[str, bytes] = {}
    for event in chain.events(EncryptionKeyRegistered, task_id=task_id):
        keys[event.account] = event.public_key
    return keys


def merge_readers(chain: ChainClient, spec: TaskSpec, task_id: int) -> list[bytes]:
    """Who a merge is sealed to: the evaluators and every registered miner (not the sponsor,
    which is given the winner at settlement: DESIGN.md, "Delivery")."""
    readers = list(evaluator_keys(spec))
    readers.extend(registered_keys(chain, task_id).values())
    unique: list[bytes] = []
    for key in readers:
        if key not in unique:
            unique.append(key)
    return unique


@dataclass(frozen=True)
class MergeBundle:
    """A merge's plaintext: weights, and the round and validation score it was posted with."""

    weights: dict[str, torch.Tensor]
    round: int
    round_score: int


def encode_merge(weights: Mapping[str, torch.Tensor], round_index: int, round_score: int) -> bytes:
    return encode_weights(weights, {ROUND_KEY: str(round_index), ROUND_SCORE_KEY: str(round_score)})


def seal_merge(
    plaintext: bytes,
    readers: Sequence[bytes],
    evaluator: LocalAccount,
    task_id: int,
    parents: Sequence[int],
    chain_id: int,
) -> bytes:
    return seal(
        plaintext,
        readers,
        evaluator,
        task_id=task_id,
        parent=max(parents),
        kind="merge",
        chain_id=chain_id,
    )


def can_read(blob: bytes, key: X25519KeyPair) -> bool:
    """Whether an envelope is sealed to `key` (EnvelopeError-free: False for a bad envelope)."""
    try:
        return key.public_bytes in envelope_recipients(blob)
    except EnvelopeError:
        return False


def open_merge(
    record: NodeRecord,
    blob: bytes,
    key: X25519KeyPair,
    spec: ModelSpec,
    max_size: int,
    chain_id: int,
) -> MergeBundle:
    """A merge's weights and metadata (EnvelopeError, WeightsError if it does not open)."""
    plain = open_envelope(
        blob,
        key,
        expected_author=record.author,
        task_id=record.task_id,
        parent=max(record.parents),
        kind="merge",
        max_size=max_size,
        chain_id=chain_id,
    )
    weights = decode_weights(plain, spec, max_size)
    metadata = _metadata(plain)
    return MergeBundle(
        weights,
        int(metadata.get(ROUND_KEY, record.round)),
        int(metadata.get(ROUND_SCORE_KEY, 0)),
    )


def _metadata(safetensors: bytes) -> dict[str, str]:
    """The `__metadata__` of canonical safetensors bytes that `decode_weights` accepted."""
    length = int.from_bytes(safetensors[:8], "little")
    header = json.loads(safetensors[8 : 8 + length])
    metadata = header.get("__metadata__", {})
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def architecture_spec(
    records: Mapping[int, NodeRecord], node_id: int, store: BlobStore, max_size: int
) -> tuple[int, ModelSpec, dict[str, torch.Tensor]]:
    """(architecture id, its spec, its initial weights) under `node_id` (public bundles)."""
    arch_id = architecture_of(records, node_id)
    record = records[arch_id]
    blob = store.get(record.cid, max_size)
    if sha256(blob) != record.digest:
        raise IntegrityError(f"architecture {arch_id}'s bundle does not match its digest")
    spec, weights = decode_architecture(blob, max_size)
    return arch_id, spec, weights


def nodes_by_id(chain: ChainClient, task_id: int) -> dict[int, NodeRecord]:
    return {record.node_id: record for record in chain.nodes(task_id)}


def settled_confirmations(
    chain: ChainClient, task_id: int, records: Mapping[int, NodeRecord]
) -> dict[int, int]:
    """Merge id -> how many evaluators had confirmed it when the validation set was revealed.

    Merges are posted only until the reveal, so the count then is the one settlement uses: a
    `confirmMerge` sent later (the contract takes one) changes nothing, and every evaluator and
    `verify` count the same whenever they run. The poster's bit is set at post (1); each
    `MergeConfirmed` event carries the count after it. Before the reveal: every confirmation.
    """
    revealed = chain.events(ValidationRevealed, task_id=task_id)
    cutoff = (revealed[0].block_number, revealed[0].log_index) if revealed else None
    counts = {merge.node_id: 1 for merge in of_kind(records, NodeKind.MERGE)}
    for event in chain.events(MergeConfirmed, task_id=task_id):
        node_id = event.node_id
        if node_id in counts and (cutoff is None or (event.block_number, event.log_index) < cutoff):
            counts[node_id] = max(counts[node_id], event.confirmations)
    return counts


def unconfirmed(
    chain: ChainClient, task_id: int, records: Mapping[int, NodeRecord]
) -> dict[int, Score]:
    """The task's merges short of its quorum at the reveal, each with its invalid score: what
    settlement and `verify` give them instead of a verdict (`rewards.unconfirmed_merges`)."""
    counts = settled_confirmations(chain, task_id, records)
    return unconfirmed_merges(records.values(), counts, chain.task(task_id).quorum)


def of_kind(records: Mapping[int, NodeRecord], kind: NodeKind) -> list[NodeRecord]:
    return [records[node_id] for node_id in sorted(records) if records[node_id].kind == kind]

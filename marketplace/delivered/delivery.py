"""Delivery: the winning model, sealed to the sponsor by each evaluator at settlement.

Merges are sealed to the evaluators and the miners during the rounds (they build on them); the
sponsor gets the one model it paid for, the report's winner, when an evaluator posts its root
(DESIGN.md, "Delivery"). The plaintext is the canonical safetensors of the winner's weights
without metadata, so its sha256 is `codec.weights_digest` of the weights: for a merge the
plaintext digest the chain recorded when it was posted, for an architecture the digest of its
public bundle's weights. Anyone can check the report's delivery against the scored node
without a key (`delivery_mismatch`); the sponsor opens it and checks the same digest
(`open_delivery`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount

from marketplace.errors import DeliveryError, EnvelopeError, MarketplaceError
from marketplace.rules.messages import NodeKind, NodeRecord, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import decode_weights, encode_weights, weights_digest
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import envelope_author, envelope_recipients, open_envelope, seal
from marketplace.wire.keys import X25519KeyPair, public_key_from_hex
from marketplace.wire.report import Delivery

if TYPE_CHECKING:
    import torch


def deliver(
    store: BlobStore,
    evaluator: LocalAccount,
    spec: TaskSpec,
    task_id: int,
    winner: int,
    weights: Mapping[str, torch.Tensor],
    chain_id: int,
) -> Delivery | None:
    """Seal `weights`, the winner's, to the task's sponsor and upload them (None: the spec
    names no sponsor key, as a spec not made by `create_task` may not)."""
    if not spec.sponsor_key:
        return None
    plaintext = encode_weights(weights)
    blob = seal(
        plaintext,
        [public_key_from_hex(spec.sponsor_key)],
        evaluator,
        task_id=task_id,
        parent=winner,
        kind="delivery",
        chain_id=chain_id,
    )
    return Delivery(node_id=winner, cid=store.put(blob), weights_sha256=sha256(plaintext).hex())


def open_delivery(
    store: BlobStore,
    delivery: Delivery,
    evaluator: str,
    key: X25519KeyPair,
    model: ModelSpec,
    task_id: int,
    chain_id: int,
    max_size: int,
) -> dict[str, torch.Tensor]:
    """The delivered weights, opened with the sponsor's key and checked against the digest.

    Raises:
        StorageError: the blob cannot be fetched.
        EnvelopeError: not sealed to `key` by `evaluator` for this task and winner.
        WeightsError: the plaintext is not weights of `model`.
        DeliveryError: the plaintext is not the one whose digest the report gives.
    """
    blob = store.get(delivery.cid, max_size)
    plaintext = open_envelope(
        blob,
        key,
        expected_author=evaluator,
        task_id=task_id,
        parent=delivery.node_id,
        kind="delivery",
        max_size=max_size,
        chain_id=chain_id,
    )
    if sha256(plaintext).hex() != delivery.weights_sha256:
        raise DeliveryError("the delivered weights are not the ones the report's digest names")
    return decode_weights(plaintext, model, max_size)


def scored_digest(record: NodeRecord, arch_weights: Mapping[str, torch.Tensor] | None) -> bytes:
    """The plaintext digest of the node the report says won, from public data: a merge's from
    the chain, an architecture's from its public bundle's weights."""
    if record.kind is NodeKind.MERGE and record.plaintext_digest is not None:
        return record.plaintext_digest
    if record.kind is NodeKind.ARCHITECTURE and arch_weights is not None:
        return weights_digest(arch_weights)
    raise DeliveryError(f"node {record.node_id} is not a model the sponsor can be given")


def delivery_mismatch(
    delivery: Delivery | None,
    winner: int | None,
    spec: TaskSpec,
    evaluator: str,
    scored: bytes | None,
    store: BlobStore,
) -> str | None:
    """Why the report's delivery is not the winner it scored, sealed to the sponsor alone by
    the report's evaluator (None if it is). `scored`: the winner's plaintext digest
    (`scored_digest`). Reads the envelope's header and signature only: no key needed."""
    if winner is None or not spec.sponsor_key:
        return None if delivery is None else "a delivery without a winner or a sponsor key"
    if delivery is None:
        return f"no delivery of the winner, node {winner}"
    if delivery.node_id != winner:
        return f"it delivers node {delivery.node_id}, the winner is {winner}"
    if scored is not None and delivery.weights_sha256 != scored.hex():
        return f"it delivers weights {delivery.weights_sha256[:16]}..., node {winner} scored others"
    try:
        blob = store.get(delivery.cid, spec.max_blob_bytes)
        author, readers = envelope_author(blob), envelope_recipients(blob)
    except (MarketplaceError, EnvelopeError) as exc:
        return f"the delivery {delivery.cid} cannot be read: {exc}"
    if author.lower() != evaluator.lower():
        return f"the delivery is signed by {author}, not the report's evaluator"
    if readers != [public_key_from_hex(spec.sponsor_key)]:
        return "the delivery is not sealed to the sponsor alone"
    return None

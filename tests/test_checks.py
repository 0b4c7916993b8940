"""Validity checks: every way a submitted blob can be invalid becomes a Verdict with its code.

Blobs are real: weights from `init_weights`, encoded by the codec, sealed by a fresh
`Account.create()` key, stored in a LocalStore; the record is what the chain would hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    EnvelopeError,
    IntegrityError,
    SpecError,
    StoreUnavailable,
    WeightsError,
)
from marketplace.protocol.checks import check_architecture, check_update
from marketplace.protocol.verdicts import NODE_ERRORS, Refusal, Verdict, refusal
from marketplace.rules.messages import DataSchema, Metric, NodeKind, NodeRecord
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.storage.stores import BlobStore, LocalStore
from marketplace.wire.architecture import (
    SPEC_METADATA_KEY,
    decode_architecture,
    encode_architecture,
)
from marketplace.wire.codec import encode_weights
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import seal
from marketplace.wire.keys import X25519KeyPair

TASK, PARENT, NODE = 5, 2, 9
CAP = 1 << 20
TOLERANCE = 2.0**-10  # exact in float32: the boundary tests below are exact
SPEC = ModelSpec.from_json(
    json.dumps(
        {
            "input_shape": [4],
            "layers": [
                {"type": "linear", "in_features": 4, "out_features": 3},
                {"type": "relu"},
                {"type": "linear", "in_features": 3, "out_features": 2},
            ],
        }
    )
)
FITS = (DataSchema(num_features=4, num_classes=2), Metric.ACCURACY)  # the task SPEC fits
Weights = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def miner() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


@pytest.fixture(scope="module")
def reader() -> X25519KeyPair:
    return X25519KeyPair.generate()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "blobs")


def parent_weights() -> Weights:
    weights = init_weights(SPEC, 1)
    weights["0.weight"][0, 0] = 0.5  # a value the boundary tests shift by exact amounts
    return weights


def trained(delta: float = 0.25) -> Weights:
    """The parent's weights with one value moved by `delta`."""
    weights = parent_weights()
    weights["0.weight"][0, 0] += delta
    return weights


def sealed(plaintext: bytes, author: LocalAccount, reader: X25519KeyPair, **binding: Any) -> bytes:
    bound: dict[str, Any] = {"task_id": TASK, "parent": PARENT, "kind": "update"} | binding
    return seal(plaintext, [reader.public_bytes], author, **bound)


def record(
    blob: bytes, store: BlobStore, author: str, *, kind: NodeKind = NodeKind.UPDATE, **fields: Any
) -> NodeRecord:
    """The record the chain holds for `blob`, stored in `store` now."""
    values: dict[str, Any] = {
        "task_id": TASK,
        "node_id": NODE,
        "kind": kind,
        "author": author,
        "parents": (PARENT,) if kind is NodeKind.UPDATE else (0,),
        "round": 0,
        "samples": 100,
        "digest": sha256(blob),
        "cid": store.put(blob),
        "block_number": 1,
    }
    return NodeRecord(**(values | fields))


def check(
    node: NodeRecord, store: BlobStore, reader: X25519KeyPair, max_size: int = CAP
) -> Verdict:
    return check_update(
        node, store, reader.private_key, SPEC, parent_weights(), TASK, TOLERANCE, max_size
    )


def submitted(
    plaintext: bytes,
    store: BlobStore,
    miner: LocalAccount,
    reader: X25519KeyPair,
    **binding: Any,
) -> Verdict:
    """Seal `plaintext` as `miner`'s update, store it, record it, and check it."""
    blob = sealed(plaintext, miner, reader, **binding)
    return check(record(blob, store, miner.address), store, reader)


def refused(verdict: Verdict, code: Refusal, detail: str = "") -> None:
    assert not verdict.valid
    assert verdict.weights is None
    assert verdict.code is code
    assert verdict.reason.startswith(code.value)
    assert detail in verdict.reason


# ----------------------------------------------------------------------------- updates


def test_a_trained_update_is_valid_with_its_weights(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    weights = trained()
    verdict = submitted(encode_weights(weights), store, miner, reader)
    assert (verdict.node_id, verdict.valid, verdict.reason, verdict.code) == (NODE, True, "", None)
    assert verdict.weights is not None
    assert list(verdict.weights) == list(weights)
    assert all(torch.equal(verdict.weights[name], weights[name]) for name in weights)


def test_a_missing_blob_is_blob_missing(
    store: LocalStore, tmp_path: Path, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = sealed(encode_weights(trained()), miner, reader)
    elsewhere = LocalStore(tmp_path / "elsewhere")
    refused(check(record(blob, elsewhere, miner.address), store, reader), Refusal.BLOB_MISSING)


def test_a_cid_that_is_no_cid_is_blob_missing(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = sealed(encode_weights(trained()), miner, reader)
    node = record(blob, store, miner.address, cid="../../etc/passwd")
    refused(check(node, store, reader), Refusal.BLOB_MISSING, "not a base32 CIDv1")


def test_a_blob_over_the_cap_is_too_large(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = sealed(encode_weights(trained()), miner, reader)
    verdict = check(record(blob, store, miner.address), store, reader, max_size=len(blob) - 1)
    refused(verdict, Refusal.TOO_LARGE)


def test_a_blob_other_than_the_chain_digest_is_digest_mismatch(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = sealed(encode_weights(trained()), miner, reader)
    node = record(blob, store, miner.address, digest=sha256(b"what the miner committed to"))
    refused(check(node, store, reader), Refusal.DIGEST_MISMATCH, sha256(blob).hex())


def test_an_envelope_sealed_to_another_reader_is_undecryptable(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = sealed(encode_weights(trained()), miner, X25519KeyPair.generate())
    verdict = check(record(blob, store, miner.address), store, reader)
    refused(verdict, Refusal.UNDECRYPTABLE, "not a recipient")


def test_an_envelope_signed_by_someone_else_fails_the_author_binding(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    copier: LocalAccount = Account.create()
    blob = sealed(encode_weights(trained()), copier, reader)  # recorded as the miner's node
    verdict = check(record(blob, store, miner.address), store, reader)
    refused(verdict, Refusal.AUTHOR_BINDING, f"signed by {copier.address}")


def test_an_author_recorded_in_lower_case_still_binds(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = sealed(encode_weights(trained()), miner, reader)
    assert check(record(blob, store, miner.address.lower()), store, reader).valid


@pytest.mark.parametrize(
    ("binding", "shown"),
    [
        ({"parent": PARENT + 1}, f"parent {PARENT + 1}"),
        ({"task_id": TASK + 1}, f"task {TASK + 1}"),
        ({"kind": "merge"}, "kind merge"),
        ({"chain_id": 1}, "chain 1"),
    ],
)
def test_an_envelope_bound_to_another_node_fails_the_binding(
    store: LocalStore,
    miner: LocalAccount,
    reader: X25519KeyPair,
    binding: dict[str, Any],
    shown: str,
) -> None:
    verdict = submitted(encode_weights(trained()), store, miner, reader, **binding)
    refused(verdict, Refusal.BINDING, shown)


def test_a_tampered_byte_is_undecryptable(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    blob = bytearray(sealed(encode_weights(trained()), miner, reader))
    blob[len(blob) // 2] ^= 0x01  # in the ciphertext; the chain digest is of the tampered bytes
    verdict = check(record(bytes(blob), store, miner.address), store, reader)
    refused(verdict, Refusal.UNDECRYPTABLE, "tampered")


def test_bytes_that_are_no_envelope_are_undecryptable(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    verdict = check(record(b"plain bytes", store, miner.address), store, reader)
    refused(verdict, Refusal.UNDECRYPTABLE)


def test_a_plaintext_that_is_not_safetensors_is_refused_as_weights(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    verdict = submitted(b"\x80\x04pickle? no.", store, miner, reader)
    refused(verdict, Refusal.WEIGHTS, "not safetensors")


def test_a_tensor_of_the_wrong_shape_is_refused_as_weights(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    weights = trained()
    weights["2.weight"] = torch.zeros(2, 5)
    verdict = submitted(encode_weights(weights), store, miner, reader)
    refused(verdict, Refusal.WEIGHTS, "'2.weight' has shape [2, 5], expected [2, 3]")


def test_a_missing_tensor_is_refused_as_weights(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    weights = trained()
    del weights["2.bias"]
    refused(submitted(encode_weights(weights), store, miner, reader), Refusal.WEIGHTS, "2.bias")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_non_finite(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair, value: float
) -> None:
    weights = trained()
    weights["2.bias"][1] = value
    verdict = submitted(encode_weights(weights), store, miner, reader)
    refused(verdict, Refusal.NON_FINITE, "'2.bias'")


def test_an_exact_copy_of_the_parent_is_no_update(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    verdict = submitted(encode_weights(parent_weights()), store, miner, reader)
    refused(verdict, Refusal.NO_UPDATE, f"parent {PARENT}")


def test_weights_within_the_tolerance_of_the_parent_are_no_update(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    for delta in (TOLERANCE / 2, TOLERANCE, -TOLERANCE):  # the tolerance itself included
        verdict = submitted(encode_weights(trained(delta)), store, miner, reader)
        refused(verdict, Refusal.NO_UPDATE)


def test_weights_just_over_the_tolerance_are_valid(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    verdict = submitted(encode_weights(trained(TOLERANCE + 2.0**-20)), store, miner, reader)
    assert verdict.valid, verdict.reason


class UnreachableStore:
    """A BlobStore whose node cannot be reached."""

    def put(self, data: bytes) -> str:
        raise StoreUnavailable("put: ConnectError after 4 tries")

    def get(self, cid: str, max_size: int) -> bytes:
        raise StoreUnavailable("cat: ConnectError after 4 tries")

    def has(self, cid: str) -> bool:
        raise StoreUnavailable("block/stat: ConnectError after 4 tries")

    def pin(self, cid: str) -> None:
        raise StoreUnavailable("pin/add: ConnectError after 4 tries")


def test_an_unreachable_store_raises_instead_of_forfeiting_the_deposit(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    unreachable = UnreachableStore()
    assert isinstance(unreachable, BlobStore)
    node = record(sealed(encode_weights(trained()), miner, reader), store, miner.address)
    with pytest.raises(StoreUnavailable):
        check(node, unreachable, reader)
    with pytest.raises(StoreUnavailable):
        check_architecture(
            node.model_copy(update={"kind": NodeKind.ARCHITECTURE}), unreachable, CAP, *FITS
        )


def test_caller_mistakes_raise_value_error(
    store: LocalStore, miner: LocalAccount, reader: X25519KeyPair
) -> None:
    node = record(sealed(encode_weights(trained()), miner, reader), store, miner.address)
    key = reader.private_key
    wrong_parent = {name: torch.zeros(1) for name in parent_weights()}
    with pytest.raises(ValueError, match="not an UPDATE"):
        check(node.model_copy(update={"kind": NodeKind.MERGE}), store, reader)
    with pytest.raises(ValueError, match="belongs to task"):
        check_update(node, store, key, SPEC, parent_weights(), TASK + 1, TOLERANCE, CAP)
    with pytest.raises(ValueError, match="tolerance"):
        check_update(node, store, key, SPEC, parent_weights(), TASK, -1.0, CAP)
    with pytest.raises(ValueError, match="parent weights"):
        check_update(node, store, key, SPEC, wrong_parent, TASK, TOLERANCE, CAP)


def test_a_verdict_keeps_its_invariants() -> None:
    with pytest.raises(ValueError):
        Verdict(NODE, True, "no-update")
    with pytest.raises(ValueError):
        Verdict(NODE, False, "")
    with pytest.raises(ValueError):
        Verdict(NODE, True, "")  # valid, but no weights
    with pytest.raises(ValueError):
        Verdict(NODE, False, "non-finite", weights=parent_weights())
    with pytest.raises(ValueError, match="Refusal code"):
        Verdict(NODE, False, "bad vibes: looks off")
    assert Verdict.refused(NODE, Refusal.NO_UPDATE).code is Refusal.NO_UPDATE


# ------------------------------------------------------------------------- architectures


def bundle_with(metadata: dict[str, str] | None, weights: Weights | None = None) -> bytes:
    return encode_weights(init_weights(SPEC, 0) if weights is None else weights, metadata)


def test_an_architecture_bundle_round_trips_canonically() -> None:
    weights = init_weights(SPEC, 0)
    bundle = encode_architecture(SPEC, weights)
    spec, decoded = decode_architecture(bundle, CAP)
    assert spec == SPEC
    assert list(decoded) == list(weights)
    assert all(torch.equal(decoded[name], weights[name]) for name in weights)
    assert encode_architecture(spec, decoded) == bundle
    assert bundle == bundle_with({SPEC_METADATA_KEY: SPEC.to_json().decode()})


def test_encode_architecture_refuses_weights_of_another_spec() -> None:
    weights = init_weights(SPEC, 0)
    del weights["0.bias"]
    with pytest.raises(WeightsError, match="0.bias"):
        encode_architecture(SPEC, weights)


def test_decode_architecture_refuses_a_bundle_over_the_cap() -> None:
    bundle = encode_architecture(SPEC, init_weights(SPEC, 0))
    with pytest.raises(WeightsError, match="over the cap"):
        decode_architecture(bundle, len(bundle) - 1)
    with pytest.raises(SpecError):
        decode_architecture(bundle_with(None), CAP)


def test_a_valid_architecture_node_gives_its_spec_and_weights(
    store: LocalStore, miner: LocalAccount
) -> None:
    bundle = encode_architecture(SPEC, init_weights(SPEC, 0))
    node = record(bundle, store, miner.address, kind=NodeKind.ARCHITECTURE)
    verdict, spec = check_architecture(node, store, CAP, *FITS)
    assert verdict.valid and verdict.weights is not None
    assert spec == SPEC


@pytest.mark.parametrize(
    ("bundle", "code", "detail"),
    [
        (bundle_with(None), Refusal.SPEC, 'no "model_spec"'),
        (bundle_with({"model": "{}"}), Refusal.SPEC, 'no "model_spec"'),
        (bundle_with({SPEC_METADATA_KEY: "not json"}), Refusal.SPEC, "malformed JSON"),
        (
            bundle_with(
                {
                    SPEC_METADATA_KEY: json.dumps(
                        {"input_shape": [4], "layers": [{"type": "exec", "code": "rm -rf /"}]}
                    )
                }
            ),
            Refusal.SPEC,
            "not on the allow-list",
        ),
        (
            bundle_with(
                {SPEC_METADATA_KEY: SPEC.to_json().decode()},
                init_weights(SPEC, 0) | {"0.weight": torch.zeros(3, 5)},
            ),
            Refusal.WEIGHTS,
            "'0.weight' has shape [3, 5]",
        ),
        (
            bundle_with(
                {SPEC_METADATA_KEY: SPEC.to_json().decode()},
                init_weights(SPEC, 0) | {"0.bias": torch.full((3,), math.nan)},
            ),
            Refusal.NON_FINITE,
            "'0.bias'",
        ),
        (b"\x00" * 7, Refusal.WEIGHTS, "not safetensors"),
        (b"\x10" + b"\x00" * 7 + b"not json here!!!", Refusal.WEIGHTS, "not safetensors"),
    ],
    ids=[
        "no-metadata",
        "no-spec-key",
        "spec-not-json",
        "spec-layer-not-allowed",
        "wrong-shape",
        "nan",
        "too-short",
        "header-not-json",
    ],
)
def test_a_bad_architecture_bundle_is_invalid(
    store: LocalStore, miner: LocalAccount, bundle: bytes, code: Refusal, detail: str
) -> None:
    node = record(bundle, store, miner.address, kind=NodeKind.ARCHITECTURE)
    verdict, spec = check_architecture(node, store, CAP, *FITS)
    refused(verdict, code, detail)
    assert spec is None


def test_an_architecture_node_checks_the_cap_and_the_digest(
    store: LocalStore, miner: LocalAccount
) -> None:
    bundle = encode_architecture(SPEC, init_weights(SPEC, 0))
    node = record(bundle, store, miner.address, kind=NodeKind.ARCHITECTURE)
    refused(check_architecture(node, store, len(bundle) - 1, *FITS)[0], Refusal.TOO_LARGE)
    forged = node.model_copy(update={"digest": sha256(b"another bundle")})
    refused(check_architecture(forged, store, CAP, *FITS)[0], Refusal.DIGEST_MISMATCH)


@pytest.mark.parametrize(
    ("schema", "metric", "detail"),
    [
        (
            DataSchema(num_features=4, num_classes=3),
            Metric.ACCURACY,
            "the spec outputs shape (2,), the task needs (3,)",
        ),
        (
            DataSchema(num_features=5, num_classes=2),
            Metric.ACCURACY,
            "input_shape (4,) holds 4 values, the data has 5 per row",
        ),
        (
            DataSchema(num_features=4),
            Metric.NEGATED_SSE,
            "the spec outputs shape (2,), the task needs (1,)",
        ),
        (
            DataSchema(input="tokens", num_features=4, num_classes=2, vocab_size=9),
            Metric.ACCURACY,
            "the spec takes float32 input, the data holds int64 tokens",
        ),
    ],
    ids=["output-width", "input-width", "regression-width", "tokens"],
)
def test_an_architecture_that_does_not_fit_the_task_is_invalid(
    store: LocalStore, miner: LocalAccount, schema: DataSchema, metric: Metric, detail: str
) -> None:
    bundle = encode_architecture(SPEC, init_weights(SPEC, 0))
    node = record(bundle, store, miner.address, kind=NodeKind.ARCHITECTURE)
    verdict, spec = check_architecture(node, store, CAP, schema, metric)
    assert (verdict.valid, verdict.reason, spec) == (False, f"spec: {detail}", None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (BlobNotFound("bafkreimissing"), "blob-missing: bafkreimissing"),
        (BlobTooLarge("over"), "too-large: over"),
        (IntegrityError("bytes"), "cid-mismatch: bytes"),
        (SpecError("misfit"), "spec: misfit"),
        (WeightsError("not safetensors"), "weights: not safetensors"),
        (WeightsError("a non-finite value"), "non-finite: a non-finite value"),
        (EnvelopeError("tampered"), "undecryptable: tampered"),
    ],
)
def test_an_error_past_the_checks_becomes_the_nodes_refusal(error: Exception, reason: str) -> None:
    assert isinstance(error, NODE_ERRORS)
    assert refusal(NODE, error) == Verdict(NODE, False, reason)


def test_errors_that_are_not_the_nodes_fault_are_not_node_errors() -> None:
    assert not isinstance(StoreUnavailable("down"), NODE_ERRORS)
    with pytest.raises(TypeError):
        refusal(NODE, StoreUnavailable("down"))

"""Weights <-> safetensors: canonical bytes, header checks before any tensor, never pickle."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from marketplace.errors import WeightsError
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.wire import codec
from marketplace.wire.codec import decode_weights, encode_weights, weights_digest
from tests.helpers import MLP_SPEC

MAX = 1 << 20
SPEC = ModelSpec.from_json(json.dumps(MLP_SPEC))
OTHER = ModelSpec.from_json(
    '{"input_shape": [4], "layers": [{"type": "linear", "in_features": 4, "out_features": 2}]}'
)


def weights() -> dict[str, torch.Tensor]:
    return init_weights(SPEC, 3)


def blob(header: dict[str, Any], data: bytes) -> bytes:
    """A safetensors file with a hand-written header."""
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def parts(encoded: bytes) -> tuple[dict[str, Any], bytes]:
    length = int.from_bytes(encoded[:8], "little")
    header: dict[str, Any] = json.loads(encoded[8 : 8 + length])
    return header, encoded[8 + length :]


class TouchOnLoad:
    """Unpickling this creates `path`: the proof that a payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


# ----------------------------------------------------------------------------- encoding


def test_round_trip_in_parameter_order() -> None:
    original = weights()
    decoded = decode_weights(encode_weights(original), SPEC, MAX)
    assert list(decoded) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(torch.equal(decoded[k], original[k]) for k in original)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in decoded.values())
    decoded["0.bias"].add_(1)  # writable, and not shared with anything else
    assert torch.equal(
        decode_weights(encode_weights(original), SPEC, MAX)["0.bias"], original["0.bias"]
    )


def test_encoding_is_canonical_and_what_safetensors_writes() -> None:
    original = weights()
    shuffled = dict(reversed(list(original.items())))
    encoded = encode_weights(original)
    assert encoded == encode_weights(shuffled)
    assert encoded == safetensors.torch.save(dict(sorted(original.items())))
    header, data = parts(encoded)
    assert list(header) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert len(data) == 4 * 2410
    with_metadata = encode_weights(original, {"task": "7", "author": "0xabc", "b": "x"})
    header_text = with_metadata[8 : 8 + int.from_bytes(with_metadata[:8], "little")]
    assert header_text.startswith(b'{"__metadata__":{"author":"0xabc","b":"x","task":"7"},')
    assert len(header_text) % 8 == 0  # padded with spaces, as safetensors pads
    loaded = safetensors.torch.load(with_metadata)
    assert all(torch.equal(loaded[k], original[k]) for k in original)


def test_digest_is_sha256_of_the_canonical_encoding() -> None:
    tiny = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(2)}
    digest = weights_digest(tiny)
    assert (
        digest == hashlib.sha256(safetensors.torch.save({"b": tiny["b"], "w": tiny["w"]})).digest()
    )
    by_hand = (
        b'{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}}'
    )
    by_hand += b" " * (-len(by_hand) % 8)
    values = struct.pack("<2f", 0, 0) + struct.pack("<6f", 0, 1, 2, 3, 4, 5)
    assert encode_weights(tiny) == struct.pack("<Q", len(by_hand)) + by_hand + values
    assert digest.hex() == "be1a04261aca3cc66ba72ef0ee0cf769529d924d18f89ec917a5307be3f5b2cc"
    assert weights_digest({"b": tiny["b"], "w": tiny["w"]}) == digest  # order does not matter
    nudged = tiny["w"].clone()
    nudged[0, 0] = torch.nextafter(nudged[0, 0], torch.tensor(1.0))
    assert weights_digest({**tiny, "w": nudged}) != digest  # one ulp changes it
    assert weights_digest({**tiny, "w": tiny["w"].t().contiguous().t()}) == digest


def test_encoding_refuses_other_dtypes() -> None:
    with pytest.raises(WeightsError, match=r"tensor 'w' is torch.float64, expected float32"):
        encode_weights({"w": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(WeightsError, match="metadata must map strings to strings"):
        encode_weights({"w": torch.zeros(2)}, {"n": 1})  # type: ignore[dict-item]


# ------------------------------------------------------------------- untrusted bytes


def test_pickle_and_torch_save_payloads_are_refused_unexecuted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The payloads are live: loading them the unsafe way runs them.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(TouchOnLoad(proof))).close()  # the payload opened a file
    assert proof.exists()
    proof_pt = tmp_path / "proof-pt"
    buffer = io.BytesIO()
    torch.save({"0.weight": torch.zeros(32, 64), "x": TouchOnLoad(proof_pt)}, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)["x"].close()
    assert proof_pt.exists()

    marker = tmp_path / "marker"
    pickled = pickle.dumps({"0.weight": TouchOnLoad(marker)}, protocol=4)
    buffer = io.BytesIO()
    torch.save({"0.weight": torch.zeros(32, 64), "x": TouchOnLoad(marker)}, buffer)
    saved = buffer.getvalue()
    assert saved[:4] == b"PK\x03\x04"  # a real torch.save zip file

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unpickler was called")

    for module, name in [
        (pickle, "loads"),
        (pickle, "load"),
        (pickle, "Unpickler"),
        (torch, "load"),
    ]:
        monkeypatch.setattr(module, name, never)
    for payload in (pickled, saved):
        with pytest.raises(WeightsError, match="^not safetensors: the header length field says"):
            decode_weights(payload, SPEC, MAX)
    assert not marker.exists()


def test_the_size_cap_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> None:
        raise AssertionError("parsed before the size cap")

    monkeypatch.setattr(codec, "_read_header", never)
    encoded = encode_weights(weights())
    with pytest.raises(WeightsError) as caught:
        decode_weights(encoded, SPEC, len(encoded) - 1)
    assert (
        str(caught.value)
        == f"the weights are {len(encoded):,} bytes, over the cap of {len(encoded) - 1:,}"
    )


def test_the_header_is_checked_before_tensors_are_materialised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(data: bytes) -> None:
        raise AssertionError("tensors materialised")

    monkeypatch.setattr(safetensors.torch, "load", never)
    header, data = parts(encode_weights(weights()))
    header["0.weight"]["shape"] = [64, 32]
    with pytest.raises(WeightsError, match=r"'0.weight' has shape \[64, 32\], expected \[32, 64\]"):
        decode_weights(blob(header, data), SPEC, MAX)
    with pytest.raises(AssertionError, match="materialised"):  # valid: now it would load
        decode_weights(encode_weights(weights()), SPEC, MAX)


def edit(change: Any) -> bytes:
    header, data = parts(encode_weights(weights()))
    result = change(header, data)
    return blob(header, data) if result is None else bytes(result)


def drop(name: str) -> Any:
    return lambda header, data: header.pop(name) and None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"", "not safetensors: 0 bytes, too short for a header"),
        (lambda: b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "not safetensors: the header length field"),
        (lambda: (2**40).to_bytes(8, "little") + b"{}", "not safetensors: the header length field"),
        (lambda: (3).to_bytes(8, "little") + b"{}", "not safetensors: the header length field"),
        (lambda: (4).to_bytes(8, "little") + b"{bad", "not safetensors: the header is not JSON"),
        (
            lambda: (2).to_bytes(8, "little") + b"[]",
            "not safetensors: the header is not a JSON object",
        ),
        (
            lambda: (4).to_bytes(8, "little") + b"\xff\xfe{}",
            "not safetensors: the header is not JSON",
        ),
        (
            lambda: (2000).to_bytes(8, "little") + b"[" * 2000,
            "not safetensors: the header is not JSON",
        ),
        (lambda: edit(drop("2.bias")), "missing tensors: '2.bias'"),
        (
            lambda: edit(lambda h, d: h.update(extra=h["2.bias"]) or None),
            "unexpected tensors: 'extra'",
        ),
        (
            lambda: edit(lambda h, d: h.update({"__metadata__": {"a": 1}}) or None),
            "the header's __metadata__ must map strings to strings",
        ),
        (
            lambda: edit(lambda h, d: h["0.bias"].update(dtype="F64") or None),
            "tensor '0.bias' has dtype F64, expected F32",
        ),
        (
            lambda: safetensors.torch.save({k: v.half() for k, v in weights().items()}),
            "tensor '0.weight' has dtype F16, expected F32",
        ),
        (
            lambda: edit(lambda h, d: h["0.bias"].update(shape=[32.0]) or None),
            "tensor '0.bias' has shape [32.0], expected [32]",
        ),
        (
            lambda: edit(lambda h, d: h["0.bias"].update(extra=1) or None),
            "tensor '0.bias': the header entry needs exactly",
        ),
        (
            lambda: edit(lambda h, d: h["0.bias"].update(data_offsets=[0]) or None),
            "tensor '0.bias': data_offsets [0] are not [begin, end]",
        ),
        (
            lambda: edit(lambda h, d: h["0.bias"].update(data_offsets=[0, 64]) or None),
            "tensor '0.bias': data_offsets [0, 64] do not fit its shape",
        ),
        (
            lambda: edit(lambda h, d: h["0.bias"].update(data_offsets=[4, 132]) or None),
            "tensor '0.bias' starts at byte 4, expected 0",  # a gap
        ),
        (
            lambda: edit(lambda h, d: h["0.weight"].update(data_offsets=[0, 8192]) or None),
            "tensor '0.weight' starts at byte 0, expected 128",  # overlaps 0.bias
        ),
        (
            lambda: edit(lambda h, d: blob(h, d + b"\x00" * 4)),
            "the tensor data is 9,644 bytes, the header describes 9,640",
        ),
        (
            lambda: edit(lambda h, d: blob(h, d[:-4])),
            "the tensor data is 9,636 bytes, the header describes 9,640",  # truncated
        ),
        (
            lambda: encode_weights({**weights(), "0.bias": torch.full((32,), float("nan"))}),
            "tensor '0.bias' holds non-finite values (NaN or infinity)",
        ),
        (
            lambda: encode_weights(
                {**weights(), "2.weight": torch.zeros(10, 32).fill_(-float("inf"))}
            ),
            "tensor '2.weight' holds non-finite values (NaN or infinity)",
        ),
        (
            lambda: encode_weights(init_weights(OTHER, 0)),
            "missing tensors: '2.weight', '2.bias'",  # another spec's weights
        ),
    ],
)
def test_malformed_weights_are_refused(make: Any, message: str) -> None:
    data = make()
    with pytest.raises(WeightsError) as caught:
        decode_weights(data, SPEC, MAX)
    assert str(caught.value).startswith(message), str(caught.value)


def test_duplicate_header_keys_are_refused() -> None:
    encoded = encode_weights(weights())
    length = int.from_bytes(encoded[:8], "little")
    text = encoded[8 : 8 + length].decode().rstrip()
    entry = json.dumps({"dtype": "F32", "shape": [32], "data_offsets": [0, 128]})
    doubled = (text[:-1] + f',"0.bias":{entry}' + "}").encode()
    with pytest.raises(WeightsError, match="not JSON .*duplicate keys"):
        decode_weights(
            len(doubled).to_bytes(8, "little") + doubled + encoded[8 + length :], SPEC, MAX
        )


def test_only_bytes_are_accepted() -> None:
    encoded = encode_weights(weights())
    assert list(decode_weights(bytearray(encoded), SPEC, MAX)) == list(weights())
    with pytest.raises(WeightsError, match="weights must be bytes, not str"):
        decode_weights(encoded.hex(), SPEC, MAX)  # type: ignore[arg-type]


def test_arrays_digest_keys_on_names_shapes_dtypes_and_bytes_not_on_order() -> None:
    import numpy as np

    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    digest = codec.arrays_digest(weights)
    assert codec.arrays_digest(dict(reversed(weights.items()))) == digest
    assert codec.arrays_digest({**weights, "a": weights["a"].reshape(3, 2)}) != digest
    assert codec.arrays_digest({"c": weights["a"], "b": weights["b"]}) != digest
    assert codec.arrays_digest({**weights, "b": weights["b"].astype(np.float64)}) != digest
    changed = weights["a"].copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(9))  # one ulp
    assert codec.arrays_digest({**weights, "a": changed}) != digest
    assert codec.arrays_digest({**weights, "a": weights["a"].T.T}) == digest  # a view: same rows

"""Weights <-> safetensors bytes, checked against a `ModelSpec`; never pickle, never torch.load.

Reading untrusted bytes goes: the size cap, then the 8-byte header length and the JSON header
(names exactly the spec's, shapes, dtype F32, offsets packed without gaps or overlaps), and only
then the tensors, which must all be finite. Every refusal is a `WeightsError`.

Writing is canonical: tensors sorted by name, metadata keys sorted, compact JSON padded with
spaces to 8 bytes, as the safetensors library writes it, so equal weights give equal bytes
(and `weights_digest` is the "plaintext digest" evaluators agree on).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from marketplace.errors import WeightsError
from marketplace.rules.models import ModelSpec, parameter_shapes

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 1 << 20
_HEADER_KEYS = {"dtype", "shape", "data_offsets"}
_METADATA = "__metadata__"


def encode_weights(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Canonical safetensors bytes of float32 `tensors` (any order in, sorted by name out)."""
    import torch

    header: dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise WeightsError("metadata must map strings to strings")
        header[_METADATA] = {key: metadata[key] for key in sorted(metadata)}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(name, str) or not name or name == _METADATA:
            raise WeightsError(f"invalid tensor name {name!r}")
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise WeightsError(f"tensor {name!r} is {got}, expected float32")
        array = tensor.detach().cpu().contiguous().numpy()
        chunk = array.astype("<f4", copy=False).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(chunk)],
        }
        chunks.append(chunk)
        offset += len(chunk)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """sha256 of `encode_weights(tensors)` without metadata: the plaintext digest of a node."""
    return hashlib.sha256(encode_weights(tensors)).digest()


def arrays_digest(arrays: Mapping[str, npt.NDArray[np.float32]]) -> bytes:
    """sha256 of named arrays (names in order, each with its dtype, shape and bytes): the key
    of a score cached for weights held as numpy arrays, cheaper than `weights_digest`."""
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        hasher.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        hasher.update(array.tobytes())
    return hasher.digest()


def decode_weights(
    data: bytes | bytearray | memoryview, spec: ModelSpec, max_size: int
) -> dict[str, torch.Tensor]:
    """The spec's weights from untrusted safetensors bytes, in parameter order.

    Raises:
        WeightsError: over `max_size`, not safetensors, names or shapes other than the
            spec's, a dtype other than float32, or a non-finite value.
    """
    import torch
    from safetensors.torch import load as parse_safetensors  # safetensors: data only, no code

    if not isinstance(data, bytes | bytearray | memoryview):
        raise WeightsError(f"weights must be bytes, not {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > max_size:
        raise WeightsError(f"the weights are {size:,} bytes, over the cap of {max_size:,}")
    blob = bytes(data)
    header, data_start = _read_header(blob)
    expected = parameter_shapes(spec)
    _check_header(header, expected, size - data_start)
    loaded = parse_safetensors(blob)
    weights = {name: loaded[name] for name in expected}
    for name, tensor in weights.items():
        if not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"tensor {name!r} holds non-finite values (NaN or infinity)")
    return weights


def _read_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header (not yet checked against a spec) and where the tensor data starts."""
    if len(blob) < 8:
        raise WeightsError(f"not safetensors: {len(blob)} bytes, too short for a header")
    length = int.from_bytes(blob[:8], "little")
    if length > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise WeightsError(
            f"not safetensors: the header length field says {length:,} bytes, but the blob "
            f"has {len(blob) - 8:,} after it (and headers are capped at {MAX_HEADER_BYTES:,})"
        )
    try:
        text = blob[8 : 8 + length].decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WeightsError(f"not safetensors: the header is not JSON ({exc})") from None
    if not isinstance(header, dict) or not text.startswith("{"):
        raise WeightsError("not safetensors: the header is not a JSON object")
    return header, 8 + length


def _check_header(header: dict[str, Any], expected: dict[str, tuple[int, ...]], size: int) -> None:
    metadata = header.pop(_METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError("the header's __metadata__ must map strings to strings")
    missing = [name for name in expected if name not in header]
    unexpected = sorted(name for name in header if name not in expected)
    if missing or unexpected:
        found = [f"missing tensors: {_listed(missing)}"] if missing else []
        found += [f"unexpected tensors: {_listed(unexpected)}"] if unexpected else []
        raise WeightsError("; ".join(found))
    spans: list[tuple[int, int, str]] = []
    for name, shape in expected.items():
        info = header[name]
        if not isinstance(info, dict) or set(info) != _HEADER_KEYS:
            raise WeightsError(f"tensor {name!r}: the header entry needs exactly {_HEADER_KEYS}")
        if info["dtype"] != "F32":
            raise WeightsError(f"tensor {name!r} has dtype {info['dtype']}, expected F32")
        if not _ints(info["shape"]) or tuple(info["shape"]) != shape:
            raise WeightsError(f"tensor {name!r} has shape {info['shape']}, expected {list(shape)}")
        offsets = info["data_offsets"]
        if not (_ints(offsets) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise WeightsError(f"tensor {name!r}: data_offsets {offsets} are not [begin, end]")
        if offsets[1] - offsets[0] != 4 * math.prod(shape):
            raise WeightsError(f"tensor {name!r}: data_offsets {offsets} do not fit its shape")
        spans.append((offsets[0], offsets[1], name))
    cursor = 0
    for begin, end, name in sorted(spans):
        if begin != cursor:
            raise WeightsError(f"tensor {name!r} starts at byte {begin}, expected {cursor}")
        cursor = end
    if cursor != size:
        raise WeightsError(f"the tensor data is {size:,} bytes, the header describes {cursor:,}")


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(repr(name) for name in names[:5]) + more


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate keys")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def to_arrays(weights: Mapping[str, torch.Tensor]) -> dict[str, npt.NDArray[np.float32]]:
    """Tensors as numpy arrays (what merging and digests of arrays take)."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in weights.items()}


def to_tensors(weights: Mapping[str, npt.NDArray[np.float32]]) -> dict[str, torch.Tensor]:
    """Numpy arrays as tensors (what a model is built from)."""
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in weights.items()}

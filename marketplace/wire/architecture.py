"""The architecture bundle: a model spec and its initial weights, public, in one safetensors blob.

Architecture bundles are public (not sealed): canonical safetensors bytes
(`codec.encode_weights`) of the initial weights, whose `__metadata__` maps "model_spec" to the
spec's canonical JSON (`ModelSpec.to_json`). Equal specs and weights give equal bytes, so the
digest the chain records is reproducible. Other metadata keys are ignored by readers. The
sponsor or a miner proposing an architecture writes one (`encode_architecture`); every reader
decodes it the same way (`decode_architecture`), and `protocol.checks.check_architecture` turns
its errors into a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from marketplace.errors import SpecError, WeightsError
from marketplace.rules.models import ModelSpec, check_weights
from marketplace.wire.codec import MAX_HEADER_BYTES, decode_weights, encode_weights

if TYPE_CHECKING:
    import torch

SPEC_METADATA_KEY = "model_spec"
"""The `__metadata__` key of an architecture bundle that holds the spec's JSON."""


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

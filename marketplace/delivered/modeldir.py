"""The sponsor's model directory, as `sponsor model pull` writes it and `predict`/`export` read it:

    DIR/model.safetensors   the winner's weights (canonical safetensors, `codec.encode_weights`)
    DIR/model.json          its `ModelSpec` (the architecture's, from its public bundle)
    DIR/model_card.json     the model card (`card.ModelCard`): task, schema, lineage, payouts
    DIR/MODEL_CARD.md       the same card for people

The files are the sponsor's own, but they are read like anything else from disk: size caps
first, the spec and weights checked as the evaluators check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from marketplace.chain.client import ChainClient
from marketplace.errors import ConfigError, MarketplaceError, SpecError
from marketplace.rules.layers import MAX_SPEC_BYTES
from marketplace.rules.models import ModelSpec
from marketplace.storage.stores import BlobStore
from marketplace.wire.codec import decode_weights, encode_weights
from marketplace.wire.crypto import sha256

if TYPE_CHECKING:
    import torch

    from marketplace.delivered.card import ModelCard

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024
MAX_CARD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelFiles:
    """A delivered model: the spec, its weights and the card (what `sponsor.pull_model` gives,
    `write_model` writes and `read_model` reads back)."""

    spec: ModelSpec
    weights: dict[str, torch.Tensor]
    card: ModelCard


def write_model(directory: Path, model: ModelFiles) -> Path:
    """Write the four files into `directory` (created if missing); returns the card's path."""
    from marketplace.delivered.card_markdown import render_markdown

    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / WEIGHTS_FILE).write_bytes(encode_weights(model.weights))
        (directory / SPEC_FILE).write_bytes(model.spec.to_json())
        (directory / CARD_JSON).write_bytes(model.card.to_bytes())
        (directory / CARD_MD).write_text(render_markdown(model.card))
    except OSError as exc:
        raise ConfigError(f"cannot write the model to {directory}: {exc.strerror or exc}") from None
    return directory / CARD_MD


def read_model(directory: Path) -> ModelFiles:
    """The model in `directory` (ConfigError naming the file that is missing or wrong)."""
    from marketplace.delivered.card import ModelCard

    spec_bytes = _read(directory / SPEC_FILE, MAX_SPEC_BYTES)
    try:
        spec = ModelSpec.from_json(spec_bytes)
        weights = decode_weights(
            _read(directory / WEIGHTS_FILE, MAX_WEIGHTS_BYTES), spec, MAX_WEIGHTS_BYTES
        )
        card = ModelCard.from_bytes(_read(directory / CARD_JSON, MAX_CARD_BYTES))
    except ConfigError:
        raise
    except MarketplaceError as exc:
        raise ConfigError(
            f"{directory} does not hold a model `sponsor model pull` wrote: {exc}"
        ) from None
    return ModelFiles(spec, weights, card)


def _read(path: Path, cap: int) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: pull the model first (sponsor model pull)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise ConfigError(f"{path} is over the cap of {cap:,} bytes")
    return data


def check_card_file(
    chain: ChainClient, store: BlobStore, path: Path
) -> tuple[ModelCard, list[str]]:
    """The card at `path` (MODEL_CARD.md or its JSON twin beside it, or a JSON card anywhere)
    and every way it differs from the chain (`card_check.check_card`): the Markdown, when there is
    one, line by line against the JSON, and the weights file beside it, when there is one,
    against the card's digest."""
    from marketplace.delivered.card import ModelCard
    from marketplace.delivered.card_check import check_card

    markdown_path = path if path.suffix.lower() == ".md" else path.parent / CARD_MD
    json_path = path.parent / CARD_JSON if path.suffix.lower() == ".md" else path
    try:
        card = ModelCard.from_bytes(_read(json_path, MAX_CARD_BYTES))
    except SpecError as exc:
        raise ConfigError(f"{json_path}: {exc}") from None
    markdown = None
    if markdown_path.exists():
        markdown = _read(markdown_path, MAX_CARD_BYTES).decode("utf-8", errors="replace")
    problems = check_card(chain, store, card, markdown)
    weights = path.parent / WEIGHTS_FILE
    if weights.exists():
        digest = sha256(_read(weights, MAX_WEIGHTS_BYTES)).hex()
        if digest != card.model.weights_sha256:
            problems.append(f"{weights} has sha256 {digest}, not the delivered weights'")
    return card, problems

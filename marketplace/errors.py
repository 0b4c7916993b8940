"""Every failure the marketplace reports, under one root, one class each.

Contract reverts arrive as the custom error the contract raised, with its values: their classes
are generated from the ABI into `marketplace.chain.reverts` (`except reverts.NotSponsor as e:
e.values["caller"]`); this module holds their base (`ContractRevert`) and every other failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marketplace.rules.messages import Phase


class MarketplaceError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(MarketplaceError):
    """A setting or an argument is missing or malformed."""


class StorageError(MarketplaceError):
    """A blob could not be stored or fetched."""


class BlobNotFound(StorageError):
    """No blob is stored under this CID (or the node did not find it in time)."""


class BlobTooLarge(StorageError):
    """A blob is larger than the cap the reader set; it was not read into memory."""


class IntegrityError(StorageError):
    """The bytes read do not hash to the CID they were asked for."""


class NoMatchingReport(IntegrityError):
    """No posted payout report matches the task's agreed root (each is missing or lies)."""


class StoreUnavailable(StorageError):
    """The IPFS node could not be reached, even after retries."""


class SpecError(MarketplaceError):
    """A model spec or task spec is refused (unknown layer, too large, malformed)."""


class OverBudget(SpecError):
    """Scoring the model on the task's validation rows costs more than the task's budget."""


class ScoringTimeout(MarketplaceError):
    """Scoring one node took longer than the task's `scoring_seconds`."""


class WeightsError(MarketplaceError):
    """Weights bytes are refused: not safetensors, wrong names, shapes or dtypes, non-finite."""


class EnvelopeError(MarketplaceError):
    """An envelope cannot be opened: not a recipient, tampered, or not bound to its author."""


class DataFormatError(MarketplaceError):
    """A data file is malformed; the message names the row and column."""


class ExportError(MarketplaceError):
    """A model cannot be exported to ONNX, or its exported graph disagrees with torch."""


class ValidationUnavailable(MarketplaceError):
    """No copy of the task's validation set this evaluator can read matches the commitment."""


class DeliveryError(MarketplaceError):
    """The sponsor's model cannot be had yet, or what was delivered is not what was scored."""


class DagError(MarketplaceError):
    """The model tree handed to the reward rule is inconsistent (unknown parent, cycle...)."""


class ChainError(MarketplaceError):
    """Talking to the chain failed."""


class ChainUnavailable(ChainError):
    """An engine (the Ethereum node, or IPFS) stayed unreachable for longer than allowed."""


class TransactionReverted(ChainError):
    """A mined transaction reverted without a decodable reason (state changed, or out of gas)."""


class ContractRevert(ChainError):
    """The contract reverted with a custom error; `values` holds its arguments by name.
    One subclass per error of the contract's ABI is generated into `marketplace/chain/reverts.py`
    (`scripts/gen_reverts.py`), with the error's 4-byte `SELECTOR` and its ABI `ARGUMENTS`."""

    SELECTOR: ClassVar[bytes] = b""
    ARGUMENTS: ClassVar[tuple[tuple[str, str], ...]] = ()  # (name, ABI type), in order

    def __init__(self, **values: Any) -> None:
        self.values = values
        shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
        super().__init__(f"{type(self).__name__}({shown})")


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


class UnknownRevert(ContractRevert):
    """The contract reverted with data this client cannot decode."""


def phase_mask(*phases: Phase) -> int:
    """The bitmap `WrongPhase` names its allowed phases by: bit p set for each `Phase` p."""
    return sum(1 << phase for phase in set(phases))


class PhaseRevert(ContractRevert):
    """A revert that names the task's `current` phase and the phases the call is `allowed` in,
    a bit per `Phase` (`phase_mask`): its message names them (the base of `reverts.WrongPhase`)."""

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        task, current, allowed = values["taskId"], Phase(values["current"]), self.allowed
        needs = "this needs " + " or ".join(map(_phase_name, allowed))
        Exception.__init__(
            self,
            f"task {task} is in phase {_phase_name(current)}; "
            + (needs if allowed else "no phase allows this any more"),
        )

    @property
    def allowed(self) -> tuple[Phase, ...]:
        """The phases the call would have been accepted in, in lifecycle order."""
        return tuple(p for p in Phase if int(self.values["allowed"]) >> p & 1)


def _phase_name(phase: Phase) -> str:
    return phase.name.title()

"""The privacy ledger: how much of its differential-privacy budget each private dataset has
spent, over every task, round and account on this machine, across restarts.

A dataset is known by a fingerprint of its bytes (a file's, a folder's files', or in-memory
rows'), so renaming or copying it does not reset its budget. A submission's spend is recorded
*before* training, under a key naming the chain, contract, task and round: a kill after
training and a restart find the same key and spend nothing more, and a budget can never be
passed by training first and asking later. After training, the spend is lowered to what the
accountant measured. Spends add up (basic composition: conservative, and simple to check).

Once a dataset has spent any budget, a submission trained without DP on it is refused: one
non-private release voids every guarantee the earlier ones bought.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from marketplace.errors import ConfigError, MarketplaceError
from marketplace.rules.datafiles import Dataset
from marketplace.runtime.state import MAX_STATE_BYTES
from marketplace.storage.files import write_atomically

DEFAULT_BUDGET = 10.0  # total epsilon per dataset unless the owner says otherwise


class PrivacyBudgetExceeded(MarketplaceError):
    """A submission would take a dataset past its privacy budget, or past DP altogether."""


class Spend(BaseModel):
    epsilon: float = Field(gt=0)
    delta: float = Field(ge=0, lt=1)
    measured: bool = False  # the accountant's figure (else the reserved upper bound)


class DatasetLedger(BaseModel):
    spends: dict[str, Spend] = Field(default_factory=dict)  # submission key -> spend

    @property
    def epsilon(self) -> float:
        return sum(s.epsilon for s in self.spends.values())

    @property
    def delta(self) -> float:
        return sum(s.delta for s in self.spends.values())


class LedgerFile(BaseModel):
    version: int = 1
    datasets: dict[str, DatasetLedger] = Field(default_factory=dict)  # fingerprint -> ledger


def fingerprint(data: Path | Dataset) -> str:
    """sha256 of the dataset's bytes: a file's; a folder's files', by relative name; or the
    in-memory rows' arrays."""
    digest = hashlib.sha256()
    if isinstance(data, Dataset):
        for array in (data.features, data.labels):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()
    path = Path(data)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class PrivacyLedger:
    """The ledger file, with a budget of `budget` epsilon per dataset."""

    def __init__(self, path: Path, budget: float = DEFAULT_BUDGET) -> None:
        if not budget > 0:
            raise ConfigError(f"a privacy budget must be positive, not {budget}")
        self.path, self.budget = Path(path), budget
        self.file = self._load()

    def _load(self) -> LedgerFile:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedgerFile()
        if len(raw) > MAX_STATE_BYTES:
            raise ConfigError(f"the privacy ledger {self.path} is over {MAX_STATE_BYTES:,} bytes")
        try:
            return LedgerFile.model_validate_json(raw)
        except ValidationError as exc:
            # Never guess here: a ledger read as empty would hand out the budget again.
            raise ConfigError(f"the privacy ledger {self.path} is damaged: {exc}") from None

    def _save(self) -> None:
        write_atomically(self.path, json.dumps(self.file.model_dump(), indent=1, sort_keys=True))

    def spent(self, dataset: str) -> DatasetLedger:
        return self.file.datasets.get(dataset, DatasetLedger())

    def reserve(self, dataset: str, key: str, epsilon: float | None, delta: float) -> None:
        """Record that submission `key` spends up to (`epsilon`, `delta`) of `dataset`'s budget
        (None: trained without DP), or refuse it. Idempotent for a key already recorded."""
        ledger = self.spent(dataset)
        if key in ledger.spends:
            return
        if epsilon is None:
            if ledger.spends:
                raise PrivacyBudgetExceeded(
                    f"this dataset has spent epsilon {ledger.epsilon:.3f} under DP; training it "
                    "without DP now would void that: pass --dp-epsilon"
                )
            return  # never under DP: nothing to account
        if ledger.epsilon + epsilon > self.budget + 1e-9:
            raise PrivacyBudgetExceeded(
                f"epsilon {epsilon:g} would take this dataset to {ledger.epsilon + epsilon:.3f}, "
                f"past its budget of {self.budget:g} ({ledger.epsilon:.3f} spent over "
                f"{len(ledger.spends)} submissions)"
            )
        ledger.spends[key] = Spend(epsilon=epsilon, delta=delta)
        self.file.datasets[dataset] = ledger
        self._save()

    def settle(self, dataset: str, key: str, epsilon: float) -> None:
        """Lower a reserved spend to what the accountant measured after training."""
        spend = self.spent(dataset).spends.get(key)
        if spend is None or spend.measured:
            return
        self.file.datasets[dataset].spends[key] = Spend(
            epsilon=min(spend.epsilon, epsilon), delta=spend.delta, measured=True
        )
        self._save()

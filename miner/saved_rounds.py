"""A miner's saved state for each round: how far its work got, so that a restart resumes it.

The state file (marketplace.runtime.state) holds a section per task and round,
`tasks/<task>/rounds/<round>`: its `status` (`RoundStatus`) and what that step produced (the
base joined on, the sealed blob's digest, parent, rows, loss and epsilon, its CID, the node id,
whether its mask seeds are settled). A sealed blob is kept on disk under `sealed/` beside the
state file until it is uploaded: the one thing the chain cannot remember, so an IPFS outage or
a kill costs no retraining.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from marketplace.runtime.state import StateFile
from marketplace.storage.files import write_bytes_atomically
from marketplace.wire.crypto import sha256
from miner.trainer import TrainResult


class RoundStatus(StrEnum):
    """Where this miner's work on a round stands, as its state file keeps it (a restart
    resumes from it)."""

    JOINED = "joined"  # a secure aggregation round: joined on a base, not yet sealed
    NOT_AGGREGATED = "not aggregated"  # joined, but the round's group never formed
    SEALED = "sealed"  # trained and sealed, kept under state/sealed/ until uploaded
    UPLOADED = "uploaded"  # in the store, not yet submitted
    SUBMITTED = "submitted"


class SavedRounds:
    """The round sections of one miner's state file, and its sealed blobs kept beside it."""

    def __init__(self, state: StateFile) -> None:
        self.state = state

    def section(self, task_id: int, round_index: int) -> dict[str, object]:
        """The round's section (created empty); change it through `mark`, which saves it."""
        return self.state.section("tasks", task_id, "rounds", round_index)

    def mark(self, saved: dict[str, object], status: RoundStatus, **fields: object) -> None:
        """Record that the round reached `status`, with what that step produced, on disk."""
        saved.update(status=status, **fields)
        self.state.save()

    def keep_sealed(
        self, saved: dict[str, object], blob: bytes, parent: int, result: TrainResult
    ) -> None:
        """Keep the sealed update on disk until it is uploaded, and what it declares."""
        digest = sha256(blob).hex()
        write_bytes_atomically(self._sealed_path(digest), blob)
        self.mark(
            saved,
            RoundStatus.SEALED,
            digest=digest,
            parent=parent,
            samples=result.samples,
            loss=result.loss,
            epsilon=result.epsilon,
        )

    def sealed_blob(self, saved: Mapping[str, object]) -> bytes | None:
        """The sealed update kept for an upload that did not happen, if it is intact."""
        if saved.get("status") != RoundStatus.SEALED:
            return None
        path = self._sealed_path(str(saved["digest"]))
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        return blob if sha256(blob).hex() == saved["digest"] else None

    def uploaded(self, saved: dict[str, object], cid: str) -> None:
        """Record the upload under `cid`; the sealed copy on disk is no longer needed."""
        self.mark(saved, RoundStatus.UPLOADED, cid=cid)
        self._sealed_path(str(saved["digest"])).unlink(missing_ok=True)

    def reveal_pending(self, task_id: int, round_index: int) -> bool:
        """Whether this miner submitted to the round and has not settled its mask seeds."""
        saved = self.section(task_id, round_index)
        return saved.get("status") == RoundStatus.SUBMITTED and saved.get("seeds") is None

    def reveal_settled(self, task_id: int, round_index: int, line: str) -> None:
        """Record what revealing the round's mask seeds did: the round is not looked at again."""
        self.section(task_id, round_index)["seeds"] = line
        self.state.save()

    def _sealed_path(self, digest: str) -> Path:
        return self.state.path.parent / "sealed" / f"{digest}.blob"

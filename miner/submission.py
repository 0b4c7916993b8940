"""A trained update's way out: sealed to the task's evaluators, kept on disk, uploaded, submitted.

Each step is recorded in the miner's saved rounds (miner.saved_rounds) before the next begins,
so a restart resumes at the step it stopped at (`Submitter.resume`) instead of training again;
`Submission` is what a round ends with.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from marketplace.protocol.tasks import evaluator_keys, miner_key, registered_keys
from marketplace.rules.messages import NodeRecord, TaskSpec
from marketplace.runtime.connect import Connected, Connection
from marketplace.runtime.faults import crash_point, pause_point
from marketplace.runtime.timing import Stopwatch
from marketplace.wire.codec import encode_weights
from marketplace.wire.crypto import sha256
from marketplace.wire.envelope import seal
from miner.saved_rounds import RoundStatus, SavedRounds
from miner.trainer import TrainResult

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def epsilon_millis(epsilon: object) -> int:
    """The DP spend as the chain records it: thousandths of epsilon, rounded up (never
    declaring less than was spent); 0 without DP."""
    return 0 if epsilon is None else math.ceil(float(str(epsilon)) * 1000)


@dataclass(frozen=True)
class Submission:
    """One update this miner submitted (or found already submitted after a restart)."""

    task_id: int
    round: int
    node_id: int
    parent: int
    samples: int
    cid: str
    resumed: bool = False  # no training now: found on-chain, or a blob sealed or uploaded earlier
    found: bool = False  # it was already on-chain
    loss: float | None = None
    epsilon: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time

    @classmethod
    def found_on_chain(cls, task_id: int, round_index: int, record: NodeRecord) -> Submission:
        """The update this miner had submitted in the round, as the chain holds it."""
        return cls(
            task_id,
            round_index,
            record.node_id,
            record.parents[0],
            record.samples,
            record.cid,
            resumed=True,
            found=True,
        )


class Submitter(Connected):
    """Seals, keeps, uploads and submits one miner's updates.

    Args:
        conn: the market and the miner's account, which signs the envelopes and transactions
            (they are bound to the chain id) and derives the per-task encryption key.
        rounds: the miner's saved rounds, each step recorded there.
        watch: store writes are timed under "storage".
    """

    def __init__(
        self,
        conn: Connection,
        rounds: SavedRounds,
        watch: Stopwatch,
    ) -> None:
        super().__init__(conn)
        self.rounds = rounds
        self.watch = watch

    def resume(self, task_id: int, round_index: int, saved: dict[str, object]) -> Submission | None:
        """The blob uploaded, or sealed, before a restart, submitted now without training;
        None if there is none (or it is gone)."""
        if saved.get("status") == RoundStatus.UPLOADED and self.store.has(str(saved["cid"])):
            log.info("task %d round %d: submitting the blob uploaded before", task_id, round_index)
            return self._submit(task_id, round_index, saved, resumed=True)
        sealed = self.rounds.sealed_blob(saved)
        if sealed is not None:
            log.info("task %d round %d: uploading the blob sealed before", task_id, round_index)
            self._upload(sealed, saved)
            return self._submit(task_id, round_index, saved, resumed=True)
        return None

    def seal(
        self, task_id: int, spec: TaskSpec, weights: Mapping[str, torch.Tensor], parent: int
    ) -> bytes:
        """`weights` as an update of `parent`, sealed to the task's evaluators."""
        return seal(
            encode_weights(weights),
            evaluator_keys(spec),
            self.account,
            task_id=task_id,
            parent=parent,
            kind="update",
            chain_id=self.chain_id,
        )

    def send(
        self,
        task_id: int,
        round_index: int,
        saved: dict[str, object],
        blob: bytes,
        parent: int,
        result: TrainResult,
        seconds: dict[str, float],
        started: float,
    ) -> Submission:
        """Keep the sealed blob on disk, upload it and submit it (`started`: when sealing began)."""
        # Kept on disk until it is uploaded, so an IPFS outage or a kill costs no retraining.
        self.rounds.keep_sealed(saved, blob, parent, result)
        seconds["seal"] = time.perf_counter() - started
        started = time.perf_counter()
        self._upload(blob, saved)
        seconds["upload"] = time.perf_counter() - started
        submission = self._submit(task_id, round_index, saved, resumed=False)
        seconds["submit"] = submission.seconds["submit"]
        return replace(submission, loss=result.loss, epsilon=result.epsilon, seconds=seconds)

    def send_unsaved(
        self, task_id: int, round_index: int, blob: bytes, parent: int, samples: int
    ) -> Submission:
        """Upload and submit `blob` as an update of `parent` declaring `samples` rows, with
        nothing kept in the state file (`Miner.submit_weights`)."""
        with self.watch.measure("storage"):
            cid = self.store.put(blob)
        sent: dict[str, object] = {
            "parent": parent,
            "samples": samples,
            "digest": sha256(blob).hex(),
            "cid": cid,
        }
        return self._submit(task_id, round_index, sent, resumed=False)

    def _upload(self, blob: bytes, saved: dict[str, object]) -> None:
        pause_point("miner:uploading")
        with self.watch.measure("storage"):
            cid = self.store.put(blob)
        self.rounds.uploaded(saved, cid)
        crash_point("miner:uploaded")

    def _submit(
        self, task_id: int, round_index: int, saved: dict[str, object], resumed: bool
    ) -> Submission:
        started = time.perf_counter()
        key = miner_key(self.account, task_id)
        registered = registered_keys(self.chain, task_id).get(self.address)
        result = self.chain.submit_update(
            self.address,
            task_id,
            parent=int(str(saved["parent"])),
            samples=int(str(saved["samples"])),
            digest=bytes.fromhex(str(saved["digest"])),
            cid=str(saved["cid"]),
            encryption_key=bytes(32) if registered == key.public_bytes else key.public_bytes,
            epsilon_millis=epsilon_millis(saved.get("epsilon")),
        )
        assert result.value is not None
        self.rounds.mark(saved, RoundStatus.SUBMITTED, node_id=result.value)
        crash_point("miner:submitted")
        log.info("task %d round %d: submitted node %d", task_id, round_index, result.value)
        return Submission(
            task_id,
            round_index,
            result.value,
            int(str(saved["parent"])),
            int(str(saved["samples"])),
            str(saved["cid"]),
            resumed,
            seconds={"submit": time.perf_counter() - started},
        )

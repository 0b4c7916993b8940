"""What `make bench-scale` measures: the shapes of its tasks, what each round and each
settlement cost, and a task's run of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shape:
    """One task of the bench: `miners` data owners for `rounds` rounds."""

    name: str
    miners: int
    rounds: int

    @property
    def updates(self) -> int:
        return self.miners * self.rounds


CURVE = Shape("rounds curve", 4, 40)
SETTLED = (Shape("100 updates", 10, 10), Shape("1,000 updates", 25, 40))
QUICK_CURVE = Shape("rounds curve", 4, 5)
QUICK_SETTLED = (Shape("12 updates", 4, 3), Shape("24 updates", 6, 4))


@dataclass(frozen=True)
class RoundCost:
    round: int  # 1-based
    updates: int
    overhead_s: float  # median over the round's updates: download, seal, upload, submit, check
    chain_s: float  # every ChainClient call of every role during the round
    evaluator_s: float  # the evaluator's step after the round: check, merge, post
    wall_s: float


@dataclass(frozen=True)
class SettlementCost:
    updates: int
    nodes: int
    warm_s: float  # the rounds' evaluator: evaluate, upload the report, post the root
    cold_s: float  # a fresh Evaluator on a fresh client: evaluate
    verify_public_s: float  # verify_task without a key
    verify_miner_s: float  # verify_task with a miner's key: the merges re-scored too
    scorings: int  # models the warm settle ran on the revealed set
    cold_scorings: int


@dataclass
class TaskRun:
    engine: str
    shape: Shape
    rounds: list[RoundCost] = field(default_factory=list)
    settlement: SettlementCost | None = None
    wall_s: float = 0.0
    profiles: dict[str, str] = field(default_factory=dict)  # settlement stage -> top lines

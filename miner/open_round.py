"""What a miner read of a task's open round before acting on it: the task, the round, the model
DAG, the spec and the chain time, read once per pass and handed to each step together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from marketplace.rules.messages import NodeRecord, TaskSpec, TaskState


@dataclass(frozen=True)
class OpenRound:
    """Round `index` of task `task_id` as the miner read it at chain time `now`."""

    task_id: int
    task: TaskState
    index: int
    records: Mapping[int, NodeRecord]
    spec: TaskSpec
    now: int

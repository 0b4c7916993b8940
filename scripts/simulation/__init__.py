"""The incentive simulator behind `make simulate` (scripts/simulate.py): markets on the real
contract, in-process, whose participants are honest or adversarial agents built from the
library's own roles (`Miner`, `Evaluator`, `marketplace.roles.sponsor`), and what each kind was
paid.

- `agents`: what each kind of agent submits every round.
- `market`: one market from task to reclaim, and its exact accounting.
- `scenarios`: the scenarios, the true marginal values, the figures and the SIMULATE line.
"""

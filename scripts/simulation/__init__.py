"""The incentive simulator behind `make simulate` (scripts/simulate.py): markets on the real
contract, in-process, whose participants are honest or adversarial agents built from the
library's own roles (`Miner`, `Evaluator`, `marketplace.roles.sponsor`), and what each kind was
paid.

- `agents`: what each kind of agent submits every round.
- `market_setup`: the data sets, the market's configuration, its chain, task and agents.
- `market`: one market from task to reclaim: its rounds, settlement and what it paid.
- `accounting`: what each agent was paid, the escrow to the wei, and the audit of both.
- `scenarios`: the scenarios, the true marginal values, the figures and the SIMULATE line.
"""

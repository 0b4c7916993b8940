# Every target sets up what it needs first (scripts/setup.sh is idempotent and quick when current).
PY := .venv/bin/python
# npm's forge (pinned in package.json) ships its Linux x64 binary in an optional dependency.
FORGE := node_modules/@foundry-rs/forge-linux-amd64/bin/forge

.PHONY: setup test forge-test demo simulate devnet engines engines-stop engines-status gas bench bench-indexer bench-paillier bench-market bench-scale load-api build lint clean

setup:
	@scripts/setup.sh

## The test suite: lint, types, pytest (contracts tested through web3.py on eth-tester), then
## forge's invariant tests of the escrow.
test: setup
	$(PY) -m ruff check marketplace miner sponsor_cli scripts tests
	$(PY) -m mypy marketplace miner sponsor_cli
	$(PY) -m pytest
	$(FORGE_TEST)

## Invariants of the escrow under random action sequences (tests/forge/, foundry.toml), offline
## with the project's solcjs. First build about 1-2 min, then about 30 s of fuzzing.
FORGE_TEST := $(FORGE) test --offline
forge-test: setup
	$(FORGE_TEST)

## The whole market on digits on embedded defaults (ALPHA=0.1 for harsher label skew).
ALPHA ?= 0.5
demo: setup
	$(PY) scripts/demo.py --alpha $(ALPHA)

## Who the reward rule pays when agents game it: honest miners, each adversary kind alone, all
## together, on the real contract in-process; ends with a SIMULATE line. SIMULATE_ARGS, e.g.
## "--dataset digits --seeds 0-4" or "--mix honest=3,sybil=1" (scripts/simulate.py --help).
SIMULATE_ARGS ?=
simulate: setup
	$(PY) scripts/simulate.py $(SIMULATE_ARGS)

## A local chain for programs in separate processes (ENGINE=anvil for npm's anvil).
ENGINE ?= tester
devnet: setup
	.venv/bin/marketplace devnet --engine $(ENGINE)

## anvil and an IPFS node in the background (.engines/), the marketplace deployed on them.
engines: setup
	scripts/engines.sh start
engines-stop:
	scripts/engines.sh stop
engines-status:
	scripts/engines.sh status

## The gas of every operation as JSON (exact, on eth-tester); non-zero exit if one is over target.
gas: setup
	$(PY) scripts/gas.py

## Throughput of storage, envelopes and scoring next to same-run baselines.
bench: setup
	$(PY) scripts/bench_core.py

## The indexer's rate on 10,000 events from anvil, next to raw eth_getLogs in the same run.
bench-indexer: setup
	$(PY) scripts/bench_indexer.py

## The market's test accuracy next to FedAvg's and FedProx's on the demo's shards at 20 rounds,
## as ratios to centralized training (seeds 0-4, alpha 0.5 and 0.1; about 25 min); flags:
## ARGS="--rounds 4 --market-rounds 4" or "--no-market".
bench-market: setup
	$(PY) scripts/bench_market.py $(ARGS)

## The market's cost as the tree grows: overhead per update, chain and evaluator time per round
## (rounds 1-40) and settlement of 100 and 1,000 updates, next to round 1, on eth-tester and
## anvil + IPFS; flags: ARGS="--engine tester --quick".
bench-scale: setup
	$(PY) scripts/bench_scale.py $(ARGS)

## Packed Paillier vs one value per ciphertext (10,000 and 100,000 values, one core).
bench-paillier: setup
	$(PY) scripts/bench_paillier.py

## p50/p99 of the API's tree, leaderboard and /health: 10,000 nodes, 100 wrk clients, 2 cores.
load-api: setup
	$(PY) scripts/load_api.py

## Recompile contracts/ into the committed artifacts (marketplace/chain/artifacts/), then
## regenerate the client's error classes from the ABI (marketplace/chain/reverts.py).
build: setup
	$(PY) scripts/compile_contracts.py
	$(PY) scripts/gen_reverts.py

lint: setup
	$(PY) -m ruff check marketplace miner sponsor_cli scripts tests
	$(PY) -m ruff format --check marketplace miner sponsor_cli scripts tests
	$(PY) -m mypy marketplace miner sponsor_cli

clean:
	rm -rf .venv node_modules .engines .stamps .build .forge .pytest_cache .mypy_cache .ruff_cache .hypothesis

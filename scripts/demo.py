"""`make demo`: the whole market on embedded defaults, with real training and real evaluation.

A sponsor posts a task on scikit-learn's bundled digits (10 ETH; the validation file sealed to
the evaluator; a test split nobody in the market ever sees); two data scientists propose
different architectures (a 38 KB MLP and a 1 MB one); four data owners hold label-skewed
shards (Dirichlet alpha, fixed seed). Every round the miners train on the best merge they can
read (round 0: two on each architecture), the evaluator posts the round's merge; then the
sponsor reveals, the evaluator scores every node and posts the payout root, the sponsor
finalizes, everyone claims, the sponsor reclaims the rest.

Every role is the library the CLIs run (`Miner`, `Evaluator`, `marketplace.roles.sponsor`), on one
in-process eth-tester chain and one local blob store; the clock is moved instead of waited on.
`--engines`: the same market on anvil and an IPFS daemon, started for the run (in the run's
folder, on free ports) and stopped after it, every transaction signed here. `--serve PORT`
(with `--engines`): `marketplace serve` follows the run, so the dashboard at
http://127.0.0.1:PORT/ shows the market as it happens, and stays up after it until Ctrl-C.
`--prox-mu MU`: the task spec suggests FedProx's proximal term of weight MU, and every data
owner trains with it (default 0: none). `--dp-epsilon E`: every data owner trains with DP-SGD
and a privacy ledger holding E, spending E / rounds a round; the report shows what each spent
next to its best update's test accuracy.
`--aggregate`: every round is a secure aggregation round (packed Paillier, pairwise masks):
the four data owners join on the latest merge in the round's first half, seal their clipped
deltas in the second, and the evaluator posts the merge it decrypted from the round's sum,
never seeing an update alone (everyone starts on the small architecture: one group a round).
After each round every data owner reveals its own mask key (double masking); `--drop-out`:
miner-4 joins round 1 and never submits, and the other three also reveal their mask keys with
it, so round 1 still merges the three.
Where the run happens is `demo_setup`'s, the market steps `demo_steps`', the data owners' data
`demo_data`'s, the tables and the plot `demo_report`'s. The last line is machine-readable:

    DEMO OK accuracy_ratio=<winner/centralized> overhead_per_update_s=<s> wall_s=<s>
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from demo_data import centralized, private_data, what_privacy_bought  # noqa: E402
from demo_report import (  # noqa: E402
    arch_of,
    console,
    gas_by_role,
    kind_of,
    plot_scores,
    print_gas,
    print_overhead,
    print_payouts,
    print_privacy,
    print_tree,
    print_wall_time,
)
from demo_setup import open_market  # noqa: E402
from demo_steps import (  # noqa: E402
    LARGE_SEED,
    SMALL_SEED,
    make_miners,
    post_task,
    propose_architectures,
    run_rounds,
    settle,
)

from marketplace.delivered.modeldir import write_model  # noqa: E402
from marketplace.roles.evaluator import Evaluator  # noqa: E402
from marketplace.roles.sponsor import pull_model  # noqa: E402
from marketplace.rules.datafiles import to_csv  # noqa: E402
from marketplace.rules.evaluation import score  # noqa: E402
from marketplace.rules.messages import Metric  # noqa: E402
from marketplace.runtime.state import StateFile  # noqa: E402
from miner.trainer import Trainer  # noqa: E402

IMPORTED = time.perf_counter()


def options() -> argparse.ArgumentParser:
    """The demo's flags and defaults (scripts/bench_market.py reads them too)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=5e-4, help="local learning rate (Adam)")
    parser.add_argument(
        "--prox-mu", type=float, default=0.0, help="FedProx proximal weight in local training"
    )
    parser.add_argument(
        "--start-on",
        choices=("both", "small", "large", "each"),
        default="both",
        help="round 0: two miners per architecture, or all on one; each: every data owner "
        "trains every architecture's lineage, every round",
    )
    parser.add_argument(
        "--merge-weighting",
        choices=("equal", "median"),
        default="equal",
        help="merges weigh updates equally, or by declared samples clipped to the median",
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, a small second model")
    parser.add_argument(
        "--dp-epsilon",
        type=float,
        help="every data owner trains with DP-SGD: this epsilon in all, a share per round",
    )
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="secure aggregation rounds: the evaluator sees only each round's sum",
    )
    parser.add_argument(
        "--drop-out",
        action="store_true",
        help="with --aggregate: miner-4 joins round 1 and never submits; the round still merges",
    )
    parser.add_argument(
        "--engines", action="store_true", help="on anvil and an IPFS daemon started for the run"
    )
    parser.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="with --engines: the API and dashboard on PORT, live, kept up after the run",
    )
    parser.add_argument("--out", type=Path, default=Path(".market/demo"), help="plot folder")
    return parser


def main() -> None:
    parser = options()
    args = parser.parse_args()
    if args.drop_out and not args.aggregate:
        parser.error("--drop-out is for --aggregate rounds")
    if args.serve is not None and not args.engines:
        parser.error("--serve needs --engines: the service follows the chain over JSON-RPC")
    if args.quick:
        args.rounds = min(args.rounds, 2)
    if args.aggregate:
        args.start_on = "small"  # one group a round: packing the 1 MB model takes 30 s a miner
    with contextlib.ExitStack() as stack:
        run(args, stack)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    market = open_market(args, stack)
    validation, test, shards = private_data(args, market.folder)
    task_id, params = post_task(args, market, validation, test)
    small, large, arch_ids = propose_architectures(args, market, task_id)
    trainer = Trainer()
    rounds = make_miners(args, market, arch_ids, trainer)
    evaluator = Evaluator(
        market.connection(market.evaluator),
        StateFile(market.folder / "state" / "evaluator.json"),
        market.watch,
    )
    run_rounds(args, market, task_id, rounds, evaluator)
    report, reclaimed = settle(market, task_id, params, evaluator)
    # The sponsor pulls the model it paid for, checked, with its card (and the test split's
    # score, which only the sponsor can give).
    pulled = pull_model(market.connection(market.sponsor), task_id, test=to_csv(test))
    card_path = write_model(args.out / "model", pulled)
    gas = gas_by_role(market.w3, market.names)

    # ------------------------------------------------------------- the untouched test split
    winner = report.winner
    assert winner is not None
    assert pulled.card.test is not None and pulled.card.model.winner == winner
    winner_correct = pulled.card.test.score
    started = time.perf_counter()
    seed = SMALL_SEED if arch_of(report, winner) == arch_ids[0] else LARGE_SEED
    central = centralized(trainer, pulled.spec, seed, shards, args)
    central_seconds = time.perf_counter() - started
    central_correct = score(pulled.spec, central.weights, test, Metric.ACCURACY)
    ratio = winner_correct / central_correct
    view = evaluator.view(task_id)
    bought = what_privacy_bought(args, market, report, view, (test, shards), rounds.ledgers)

    # ------------------------------------------------------------- the report
    print_tree(report, market.names, arch_ids)
    print_privacy(bought, args.dp_epsilon, args.aggregate)
    print_payouts(report, market.names, market.chain, reclaimed.events)
    print_gas(gas)
    console.print(
        f"winner: node {winner} ({kind_of(report, winner)}), test accuracy "
        f"{winner_correct / len(test):.4f}; centralized on the union "
        f"({args.epochs * args.rounds} epochs): {central_correct / len(test):.4f}; "
        f"ratio {ratio:.4f}"
    )
    overhead = print_overhead(report, rounds.submissions, evaluator, arch_ids, (small, large))
    training = sum(s.seconds.get("train", 0.0) for s in rounds.submissions) + central_seconds
    wall = time.perf_counter() - STARTED
    print_wall_time(market.watch, training, wall, IMPORTED - STARTED)
    setup = "anvil + IPFS daemon" if args.engines else "eth-tester + local store"
    console.print(f"setup: {setup}")
    plot = plot_scores(report, args.out)
    console.print(f"score progression plotted to {plot}")
    console.print(f"the sponsor's model and its card: {card_path}", soft_wrap=True)
    hint = f"  use it: sponsor model predict --model {card_path.parent} --data FILE"
    console.print(hint, soft_wrap=True)
    figures = f"accuracy_ratio={ratio:.4f} overhead_per_update_s={overhead:.3f} wall_s={wall:.1f}"
    print(f"DEMO OK {figures}", flush=True)
    if market.service is not None:
        _keep_serving(market.service, args.serve)


def _keep_serving(service: subprocess.Popen[bytes], port: int) -> None:
    console.print(f"the dashboard stays up at http://127.0.0.1:{port}/: Ctrl-C stops it")
    # Ctrl-C (or SIGTERM) stops it even when started from a script that ignores SIGINT, as
    # a shell does for its background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        service.wait()


if __name__ == "__main__":
    main()

"""The demo's report: the console it prints on, the model tree, the privacy, payout, gas,
overhead and wall-time tables, and the score plot; with the small reads of the agreed report
they need (a node's architecture and kind, a model's widths and size).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.table import Table
from rich.tree import Tree
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.chain.events import Reclaimed
from marketplace.roles.evaluator import Evaluator
from marketplace.rules.messages import NodeKind
from marketplace.rules.models import ModelSpec
from marketplace.runtime.timing import Stopwatch
from marketplace.wire.report import PayoutReport
from miner.submission import Submission

ETHER = 10**18
console = Console()


def gas_by_role(w3: Web3, names: dict[str, str]) -> dict[str, int]:
    """Gas every role's transactions used, read back from the chain's blocks."""
    gas: dict[str, int] = defaultdict(int)
    for block in range(1, int(w3.eth.block_number) + 1):
        for tx in w3.eth.get_block(block, full_transactions=True)["transactions"]:
            sender = cast(dict[str, Any], tx)["from"]
            if sender in names:
                receipt = w3.eth.get_transaction_receipt(cast(dict[str, Any], tx)["hash"])
                gas[names[sender].split("-")[0]] += int(receipt["gasUsed"])
    return gas


def print_tree(report: PayoutReport, names: dict[str, str], arch_ids: list[int]) -> None:
    nodes = {n.node_id: n for n in report.nodes}
    children: dict[int, list[int]] = defaultdict(list)
    for node in report.nodes:
        for parent in node.parents:
            children[parent].append(node.node_id)
    tree = Tree(f"task {report.task_id} (validation: {report.validation_digest[:12]}...)")

    def label(node_id: int) -> str:
        n = nodes[node_id]
        who = names.get(n.author, n.author[:10])
        mark = " [bold green]<- winner[/]" if node_id == report.winner else ""
        if n.kind is NodeKind.MERGE:
            who += f" of {list(n.parents)}"
        status = f"score {n.score}, gain {n.gain}" if n.valid else f"[red]invalid: {n.reason}[/]"
        return f"{node_id} {n.kind.name.lower()} by {who}: {status}{mark}"

    shown: set[int] = set()

    def add(branch: Tree, node_id: int) -> None:
        if node_id in shown:
            branch.add(f"{node_id} (above)")
            return
        shown.add(node_id)
        sub = branch.add(label(node_id))
        for child in sorted(children.get(node_id, [])):
            if nodes[child].kind is NodeKind.MERGE and min(nodes[child].parents) != node_id:
                continue  # a merge hangs under its first parent; the others are listed on it
            add(sub, child)

    for arch in arch_ids:
        add(tree, arch)
    console.print(tree)


def print_privacy(
    bought: list[tuple[str, int, float | None, int | None, float | None]],
    dp_epsilon: float | None,
    aggregate: bool,
) -> None:
    bought_by = "the best merge its sealed updates went into" if aggregate else "its best update"
    title = f"privacy: what each data owner spent, and what {bought_by} bought"
    table = Table(title=title if dp_epsilon else f"{title} (no DP: --dp-epsilon E)")
    for column in ("owner", "rows", "epsilon spent", "best node", "its test accuracy"):
        table.add_column(column, justify="left" if column == "owner" else "right")
    for owner, rows, spent, best, accuracy in bought:
        shown = "no DP" if spent is None else f"{spent:.3f}"
        quality = "-" if accuracy is None else f"{accuracy:.4f}"
        table.add_row(owner, str(rows), shown, "none valid" if best is None else str(best), quality)
    console.print(table)


def print_payouts(
    report: PayoutReport, names: dict[str, str], chain: ChainClient, reclaim_events: Any
) -> None:
    table = Table(title="who earned what (ETH) and why")
    for column in ("account", "expertise", "data", "compute", "deposits", "total", "reputation"):
        table.add_column(column, justify="left" if column == "account" else "right")
    for entry in report.payouts:
        table.add_row(
            names.get(entry.account, entry.account),
            *(f"{value / ETHER:.4f}" for value in (entry.expertise, entry.data, entry.compute)),
            f"{entry.deposits / ETHER:.2f}",
            f"{entry.amount / ETHER:.4f}",
            f"{chain.reputation(entry.account):,}",
        )
    console.print(table)
    back = sum(e.amount for e in reclaim_events if isinstance(e, Reclaimed))
    console.print(f"the sponsor reclaimed {back / ETHER:.4f} ETH that nobody earned")


def print_gas(gas: dict[str, int]) -> None:
    table = Table(title="gas spent per role")
    table.add_column("role")
    table.add_column("gas", justify="right")
    for role, used in sorted(gas.items()):
        table.add_row(role, f"{used:,}")
    console.print(table)


def print_overhead(
    report: PayoutReport,
    submissions: list[Submission],
    evaluator: Evaluator,
    arch_ids: list[int],
    models: tuple[ModelSpec, ModelSpec],
) -> float:
    """Say the market's overhead per update: everything but training and scoring, for the
    1 MB model (the small one if no update was on it); the median, in seconds."""
    small, large = models
    steps = ("download", "seal", "upload", "submit", "evaluator check")
    large_updates = [s for s in submissions if arch_of(report, s.node_id) == arch_ids[1]]
    measured = large_updates or submissions
    shown_model = large if large_updates else small
    per_step = {
        step: statistics.median(
            evaluator.check_seconds.get(s.node_id, 0.0)
            if step == "evaluator check"
            else s.seconds.get(step, 0.0)
            for s in measured
        )
        for step in steps
    }
    overhead = statistics.median(market_overhead(s, evaluator.check_seconds) for s in measured)
    train_median = statistics.median(s.seconds["train"] for s in measured)
    console.print(
        f"market overhead per update ({widths(shown_model)}, "
        f"{_param_bytes(shown_model) / 1e6:.2f} MB, "
        f"median of {len(measured)}): {overhead:.3f} s next to {train_median:.3f} s of "
        "training; " + ", ".join(f"{step} {seconds:.3f} s" for step, seconds in per_step.items())
    )
    return overhead


def market_overhead(submission: Submission, check_seconds: dict[int, float]) -> float:
    """The market's overhead of one update: its steps but training, and the evaluator's check
    of it (scripts/bench_scale.py measures the same)."""
    own = sum(s for step, s in submission.seconds.items() if step != "train")
    return own + check_seconds.get(submission.node_id, 0.0)


def print_wall_time(watch: Stopwatch, training: float, wall: float, startup: float) -> None:
    """Where the run's wall time went (`training`: the miners' and the baseline's; `startup`:
    the process's imports)."""
    parts = {
        "process start-up (imports)": startup,
        "starting anvil and the IPFS daemon": watch.total("engines"),
        "training (miners + centralized baseline)": training,
        "scoring": watch.total("scoring"),
        "chain (transactions, receipts, reads)": watch.total("chain"),
        "storage (put/get)": watch.total("storage"),
    }
    parts["other (envelopes, checks, data, report)"] = wall - sum(parts.values())
    split = Table(title=f"wall time {wall:.1f} s")
    split.add_column("part")
    split.add_column("seconds", justify="right")
    for part, seconds in parts.items():
        if seconds or part != "starting anvil and the IPFS daemon":
            split.add_row(part, f"{seconds:.2f}")
    console.print(split)


def plot_scores(report: PayoutReport, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / "scores.png"
    figure, axes = plt.subplots(figsize=(7, 4))
    by_kind: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for node in report.nodes:
        if node.valid:
            xs, ys = by_kind[node.kind.name.lower()]
            xs.append(node.node_id)
            ys.append(node.score)
    for kind, marker in (("architecture", "s"), ("update", "o"), ("merge", "*")):
        if kind in by_kind:
            axes.scatter(*by_kind[kind], label=kind, marker=marker, s=80 if kind == "merge" else 30)
    axes.set_xlabel("node id (submission order)")
    axes.set_ylabel("validation rows right")
    axes.set_title("scores of the model tree")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def widths(model: ModelSpec) -> str:
    linear = [layer for layer in model.layers if layer.type == "linear"]
    return "-".join([str(linear[0].in_features), *(str(layer.out_features) for layer in linear)])  # type: ignore[union-attr]


def _param_bytes(model: ModelSpec) -> int:
    from marketplace.rules.models import parameter_count

    return 4 * parameter_count(model)


def arch_of(report: PayoutReport, node_id: int) -> int:
    nodes = {n.node_id: n for n in report.nodes}
    node = nodes[node_id]
    while node.kind is not NodeKind.ARCHITECTURE:
        node = nodes[min(node.parents)]
    return node.node_id


def kind_of(report: PayoutReport, node_id: int) -> str:
    return next(n.kind.name.lower() for n in report.nodes if n.node_id == node_id)

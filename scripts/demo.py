"""`make demo`: one task's whole lifecycle on the embedded chain, printed as it happens.

A sponsor escrows 10 ETH behind a committed validation set; two data scientists propose
architectures; four data owners submit updates over two rounds with an evaluator's merge
between them; the sponsor reveals; the evaluator posts one Merkle root of the payouts; after
the challenge window everyone claims with a proof and the sponsor takes back the rest.

Blobs are stood in for by their digests and the payout split is computed from declared sample
counts, not from scores: training, encrypted blobs and scored evaluation join with the
end-to-end issue. Every transaction is real and every figure is read back from the chain.
"""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from marketplace.chain import ChainClient
from marketplace.crypto import PayoutLeaf, payout_tree, sha256, validation_commitment
from marketplace.devchain import advance_to, local_web3
from marketplace.messages import NodeKind, TaskParams, TxResult

ETHER = 10**18
console = Console()


def eth(wei: int) -> str:
    return f"{wei / ETHER:,.4f} ETH"


def main() -> None:
    w3 = local_web3()
    accounts = list(w3.eth.accounts)
    names = {
        accounts[0]: "sponsor",
        accounts[1]: "evaluator",
        accounts[2]: "scientist-1",
        accounts[3]: "scientist-2",
        **{accounts[4 + i]: f"miner-{i + 1}" for i in range(4)},
    }
    sponsor, evaluator = accounts[0], accounts[1]
    scientists, miners = accounts[2:4], accounts[4:8]
    gas_by_role: dict[str, int] = defaultdict(int)

    def done(who: str, what: str, result: TxResult) -> TxResult:
        role = names[who].split("-")[0]
        gas_by_role[role] += result.gas_used
        console.print(f"  [cyan]{names[who]:>11}[/] {what}  [dim]({result.gas_used:,} gas)[/]")
        return result

    console.rule("[bold]Gradient marketplace: one task, start to finish (eth-tester)")
    market = ChainClient.deploy(w3, accounts[9])
    console.print(f"contract deployed at {market.address}")

    validation = b"label,pixels...\n" + bytes(range(256))  # the sponsor's private validation set
    salt = sha256(b"sponsor's secret salt")
    params = TaskParams(
        bounty=10 * ETHER,
        deposit=ETHER // 100,
        validation_commit=validation_commitment(sha256(validation), salt),
        spec_digest=sha256(b'{"metric": "accuracy", "dataset": "digits"}'),
        spec_cid="bafkreidemospec",
        round_duration=3600,
        rounds=2,
        reveal_window=3600,
        evaluation_window=3600,
        challenge_window=600,
        claim_window=7 * 86_400,
        evaluators=(evaluator,),
    )
    task_id = done(
        sponsor,
        "created task #1: 10 ETH bounty, 2 rounds, deposit 0.01 ETH",
        market.create_task(sponsor, params),
    ).value
    assert task_id is not None

    console.rule("round 0")
    for i, scientist in enumerate(scientists):
        node = done(
            scientist,
            f"proposed architecture mlp-{i + 1}",
            market.propose_architecture(
                scientist, task_id, sha256(b"arch%d" % i), f"bafkreiarch{i}"
            ),
        )
    samples = [300, 500, 200, 437]
    round0 = []
    for i, miner in enumerate(miners):
        arch = 1 + i % 2
        node = done(
            miner,
            f"submitted an update of node {arch} ({samples[i]} samples)",
            market.submit_update(
                miner,
                task_id,
                arch,
                samples[i],
                sha256(b"r0%d" % i),
                f"bafkreiupd0{i}",
                encryption_key=sha256(miner.encode()),
            ),
        )
        round0.append(node.value)
    task = market.task(task_id)
    advance_to(w3, task.round_end(0))
    kept = [n for n in round0 if market.node(task_id, n).parent == 1]  # arch 1's line is merged
    merge0 = done(
        evaluator,
        f"merged round 0: parents {kept}",
        market.post_merge(
            evaluator,
            task_id,
            0,
            kept,
            sum(samples[0::2]),
            sha256(b"m0"),
            sha256(b"p0"),
            "bafkreimerge0",
        ),
    ).value
    assert merge0 is not None

    console.rule("round 1")
    round1 = []
    for i, miner in enumerate(miners):
        node = done(
            miner,
            f"submitted an update of merge {merge0}",
            market.submit_update(
                miner, task_id, merge0, samples[i], sha256(b"r1%d" % i), f"bafkreiupd1{i}"
            ),
        )
        round1.append(node.value)
    advance_to(w3, task.rounds_end)
    final_merge = done(
        evaluator,
        f"merged round 1: parents {round1}",
        market.post_merge(
            evaluator,
            task_id,
            1,
            round1,
            sum(samples),
            sha256(b"m1"),
            sha256(b"p1"),
            "bafkreimerge1",
        ),
    ).value

    console.rule("reveal, payouts, claims")
    done(
        sponsor,
        "revealed the validation set (matches the commitment)",
        market.reveal_validation(sponsor, task_id, sha256(validation), salt, "bafkreivalidation"),
    )

    # Illustrative split: 20% expertise to the winner's architecture author, 50% data by declared
    # samples over the winner's ancestors, every deposit refunded; the sponsor keeps the rest.
    task = market.task(task_id)
    records = {r.node_id: r for r in market.nodes(task_id)}
    owed: dict[str, int] = defaultdict(int)
    points: dict[str, int] = defaultdict(int)
    owed[scientists[0]] += task.bounty * 20 // 100
    ancestors, frontier = set(), [final_merge]
    while frontier:  # walk the DAG up from the winner
        node_id = frontier.pop()
        if node_id and node_id not in ancestors:
            ancestors.add(node_id)
            frontier.extend(records[node_id].parents)
    updates = [records[n] for n in ancestors if records[n].kind == NodeKind.UPDATE]
    total_samples = sum(r.samples for r in updates)
    for r in updates:
        share = task.bounty * 50 // 100 * r.samples // total_samples
        owed[r.author] += share
        points[r.author] += r.samples
    for r in records.values():
        if r.kind != NodeKind.MERGE:
            owed[r.author] += task.deposit
    leaves = [
        PayoutLeaf(i, account, owed[account], points[account])
        for i, account in enumerate(sorted(owed, key=names.__getitem__))
    ]
    tree = payout_tree(leaves)
    total = sum(leaf.amount for leaf in leaves)
    done(
        evaluator,
        f"posted the payout root of {len(leaves)} leaves, total {eth(total)}",
        market.post_payout_root(evaluator, task_id, tree.root, total),
    )
    advance_to(w3, market.task(task_id).challenge_end)
    done(sponsor, "finalized after the challenge window", market.finalize(sponsor, task_id))
    for leaf in leaves:
        done(
            leaf.account,
            f"claimed {eth(leaf.amount)} with a {len(tree.proof(leaf.index))}-hash proof",
            market.claim(leaf.account, task_id, leaf, tree.proof(leaf.index)),
        )
    reclaim = market.reclaim(sponsor, task_id)
    done(
        sponsor,
        f"reclaimed what was not earned: {eth(reclaim.event('Reclaimed').args['amount'])}",
        reclaim,
    )

    console.rule("the model tree")
    tree_view = Tree(f"task {task_id} (root)")
    branches = {0: tree_view}
    for node_id in sorted(records):
        r = records[node_id]
        label = f"#{node_id} {r.kind.name.lower()} by {names[r.author]}"
        if r.kind == NodeKind.MERGE:
            label += f" of {list(r.parents)}"
        elif r.kind == NodeKind.UPDATE:
            label += f", {r.samples} samples"
        branches[node_id] = branches[r.parents[-1]].add(label)
    console.print(tree_view)
    console.print(f"winner (latest merge): node {final_merge}")

    table = Table(title="who earned what", show_lines=False)
    for column in ("account", "payout", "reputation", "claimed"):
        table.add_column(column, justify="right" if column != "account" else "left")
    for leaf in leaves:
        table.add_row(
            names[leaf.account],
            eth(leaf.amount),
            str(market.reputation(leaf.account)),
            "yes" if market.is_claimed(task_id, leaf.index) else "no",
        )
    console.print(table)

    gas = Table(title="gas spent per role")
    gas.add_column("role")
    gas.add_column("gas", justify="right")
    for role, used in sorted(gas_by_role.items()):
        gas.add_row(role, f"{used:,}")
    console.print(gas)
    final = market.task(task_id)
    console.print(
        f"escrowed {eth(final.escrow)}, claimed {eth(final.claimed)}, "
        f"returned to the sponsor {eth(final.reclaimed)}, left in the contract "
        f"{eth(market.balance(market.address))}"
    )


if __name__ == "__main__":
    main()

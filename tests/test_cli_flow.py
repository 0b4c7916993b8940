"""A task from `sponsor task create` to `sponsor claim --for`, through the three command lines on
a devnet: what each state-changing command prints (what it did, then the next step), and a
claim for someone else's leaf signed and paid for by a keystore account."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from marketplace.cli.app import app as marketplace_app
from marketplace.cli.common import show_time
from marketplace.dev.devnet import Devnet, advance_chain_to
from marketplace.dev.shards import digits_splits
from marketplace.protocol.reports import agreed_report
from marketplace.rules.datafiles import to_csv
from marketplace.rules.messages import Phase
from marketplace.storage.stores import LocalStore
from sponsor_cli.app import app as sponsor_app
from tests.helpers import spent
from tests.test_cli import chain_of, funded_keystore

ETHER = 10**18
runner = CliRunner()
CHALLENGE_END: list[int] = []  # task 1's, read while it ran (finalize restarts the clock)


def run(app, devnet: Devnet, *args: str, env: dict[str, str] | None = None) -> Result:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [*args, "--data-dir", str(devnet.path.parent)], env=env)
    assert result.exit_code == 0, result.output
    return result


def after_first_line(result: Result) -> list[str]:
    """The output without its first line (which carries a gas figure)."""
    return result.output.splitlines()[1:]


@pytest.fixture(scope="module")
def settled(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Task 1 of the devnet, taken to its claims by the CLIs: one architecture (account 2), no
    miners, so the architecture wins and its author is owed the expertise share."""
    folder = tmp_path_factory.mktemp("flow")
    _, validation, _ = digits_splits(seed=0)
    (folder / "val.csv").write_bytes(to_csv(validation))
    layer = {"type": "linear", "in_features": 64, "out_features": 10}
    (folder / "mlp.json").write_text(json.dumps({"input_shape": [64], "layers": [layer]}))
    chain = chain_of(devnet)
    outputs = {
        "create": run(
            sponsor_app,
            devnet,
            "task",
            "create",
            "--validation",
            str(folder / "val.csv"),
            "--bounty",
            "10",
            "--evaluator",
            "dev:1",
            "--account",
            "0",
            "--rounds",
            "1",
        ),  # fmt: skip
        "propose": run(
            sponsor_app,
            devnet,
            "arch",
            "propose",
            "--task",
            "1",
            "--spec",
            str(folder / "mlp.json"),
            "--seed",
            "1",
            "--account",
            "2",
        ),  # fmt: skip
    }
    advance_chain_to(chain.w3, chain.task(1).rounds_end)
    outputs["reveal"] = run(sponsor_app, devnet, "task", "reveal", "1", "--account", "0")
    outputs["evaluate"] = run(
        marketplace_app, devnet, "evaluate", "--task", "1", "--account", "1", "--once"
    )
    CHALLENGE_END.append(chain.task(1).challenge_end)
    advance_chain_to(chain.w3, CHALLENGE_END[0])
    outputs["finalize"] = run(sponsor_app, devnet, "task", "finalize", "1", "--account", "0")
    return outputs


def test_propose_says_what_comes_next(settled: dict[str, Result]) -> None:
    assert after_first_line(settled["propose"]) == [
        "  next: miners train it; it earns the expertise share if the winner descends from it "
        "(watch: sponsor task show 1)"
    ]


def test_reveal_says_evaluators_score_then_the_sponsor_finalizes(
    settled: dict[str, Result], devnet: Devnet
) -> None:
    task = chain_of(devnet).task(1)
    assert after_first_line(settled["reveal"]) == [
        "  ValidationRevealed",
        "  phase now evaluation",
        "  next: evaluators now score and post payout roots "
        f"(by {show_time(task.evaluation_deadline)})",
        "  next: then, 10m after a root is agreed: sponsor task finalize 1",
    ]


def test_evaluate_once_ends_with_the_next_step(settled: dict[str, Result]) -> None:
    assert settled["evaluate"].output.splitlines()[-2:] == [
        "task 1: challenge",
        f"  next: a root is agreed; after {show_time(CHALLENGE_END[0])}: sponsor task finalize 1",
    ]


def test_finalize_points_to_the_claims_the_model_and_the_reclaim(
    settled: dict[str, Result], devnet: Devnet
) -> None:
    when = show_time(chain_of(devnet).task(1).claim_deadline)
    assert after_first_line(settled["finalize"]) == [
        "  TaskFinalized",
        "  phase now claims",
        f"  next: winners claim until {when}: sponsor claim --task 1 (miners: miner claim "
        "--task 1)",
        "  next: the sponsor's model: sponsor model pull --task 1 -o model/",
        "  next: the sponsor's unallocated part: sponsor task reclaim 1 (again after "
        f"{when} for what was not claimed)",
    ]


def test_claim_for_another_account_is_signed_and_paid_for_by_the_keystore(
    settled: dict[str, Result], devnet: Devnet, tmp_path: Path
) -> None:
    chain = chain_of(devnet)
    author = devnet.info.accounts[2].address
    store = LocalStore(devnet.path.parent / "blobs")
    entry = agreed_report(chain, store, 1).entry_for(author)
    assert entry is not None and entry.amount > 0
    payer, keystore = funded_keystore(devnet, tmp_path / "payer.json", "pw", 1)
    before = {who: chain.balance(who) for who in (author, payer.address)}

    result = run(
        sponsor_app, devnet, "claim", "--task", "1", "--for", author.lower(),
        "--keystore", str(keystore), env={"GM_PASSWORD": "pw"},
    )  # fmt: skip

    (tx_hash,) = chain.w3.eth.get_block("latest")["transactions"]  # the claim, mined alone
    transaction = chain.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
    assert transaction["from"] == payer.address
    assert chain.balance(payer.address) == before[payer.address] - spent(chain.w3, tx_hash.hex())
    assert chain.balance(author) == before[author] + entry.amount
    assert chain.is_claimed(1, entry.index)
    assert (entry.amount, entry.points) == (2 * ETHER + ETHER // 100, 0)  # 20% + the deposit
    assert result.output.splitlines() == [
        f"claimed 2.010000 ETH and 0 reputation points for {author}",
        f"  sent (and gas paid) by {payer.address}",
    ]


def test_show_lists_each_payouts_parts(settled: dict[str, Result], devnet: Devnet) -> None:
    chain = chain_of(devnet)
    report = agreed_report(chain, LocalStore(devnet.path.parent / "blobs"), 1)
    shown = runner.invoke(sponsor_app, ["task", "show", "1", "--data-dir", str(devnet.path.parent)])

    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.output.splitlines() if "expertise" in line)
    assert header.split() == [
        "leaf", "account", "amount", "expertise", "data", "compute", "deposits", "points",
        "claimed",
    ]  # fmt: skip
    assert chain.phase(1) is Phase.CLAIMS
    (entry,) = report.payouts
    parts = (entry.expertise, entry.data, entry.compute, entry.deposits)
    assert parts == (2 * ETHER, 0, 0, ETHER // 100)  # the architecture's share, its deposit back
    row = next(line for line in shown.output.splitlines() if entry.account[:8] + "…" in line)
    assert row.split() == ["0", entry.account[:8] + "…", "2.01", "2", "0", "0", "0.01", "0", "yes"]

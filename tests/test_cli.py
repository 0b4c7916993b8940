"""The three command lines through Typer's CliRunner against an in-process devnet: help of
every command, keystores, `marketplace key`, `miner watch` (the sponsor's commands: in
test_sponsor_cli.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.main import get_command
from typer.testing import CliRunner
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.chain.events import Refunded
from marketplace.cli.app import app as marketplace_app
from marketplace.dev.devnet import Devnet, advance_chain_to
from marketplace.dev.shards import digits_splits
from marketplace.protocol.tasks import account_key, paillier_hex
from marketplace.rules.datafiles import to_csv
from marketplace.rules.messages import Phase
from marketplace.runtime.connect import dev_account
from miner import cli as miner_cli
from miner.cli import app as miner_app
from miner.train_config import TrainConfig
from miner.trainer import Trainer
from sponsor_cli.app import app as sponsor_app
from tests.helpers import readable_error, spent

ETHER = 10**18
runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    _, validation, _ = digits_splits(seed=0)
    (tmp_path / "val.csv").write_bytes(to_csv(validation))
    (tmp_path / "mlp.json").write_text(
        json.dumps(
            {
                "input_shape": [64],
                "layers": [{"type": "linear", "in_features": 64, "out_features": 10}],
            }
        )
    )
    return tmp_path


def chain_of(devnet: Devnet) -> ChainClient:
    return ChainClient(Web3(Web3.HTTPProvider(devnet.info.rpc_url)), devnet.info.contract)


def invoke(app, devnet: Devnet, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "--data-dir", str(devnet.path.parent)], env=env)


def create(devnet: Devnet, files: Path, *extra: str, account: str = "0"):  # type: ignore[no-untyped-def]
    return invoke(
        sponsor_app,
        devnet,
        "task",
        "create",
        "--validation",
        str(files / "val.csv"),
        "--bounty",
        "10",
        "--evaluator",
        "dev:1",
        "--account",
        account,
        *extra,
    )


def funded_keystore(
    devnet: Devnet, path: Path, password: str, ether: int
) -> tuple[LocalAccount, Path]:
    """A new account, `ether` ETH from dev account 8, in a keystore file under `password`."""
    account: LocalAccount = Account.create()
    path.write_text(json.dumps(Account.encrypt(account.key, password)))
    funder = devnet.info.accounts[8].address
    chain_of(devnet).w3.eth.send_transaction(
        {"from": funder, "to": account.address, "value": ether * ETHER}
    )
    return account, path


def test_every_command_has_help() -> None:
    for app in (sponsor_app, miner_app, marketplace_app):
        group = get_command(app)
        names = [[]] + [[name] for name in group.commands]  # type: ignore[attr-defined]
        for name in list(group.commands):  # type: ignore[attr-defined]
            sub = group.commands[name]  # type: ignore[attr-defined]
            names += [[name, child] for child in getattr(sub, "commands", {})]
        for path in names:
            result = runner.invoke(app, [*path, "--help"])
            assert result.exit_code == 0, (path, result.output)
            assert "Usage" in result.output


def test_a_keystore_signs_with_the_password_from_the_environment(
    devnet: Devnet, files: Path, tmp_path: Path
) -> None:
    account, keystore = funded_keystore(devnet, tmp_path / "key.json", "correct horse", 20)
    chain = chain_of(devnet)

    bad = invoke(
        sponsor_app,
        devnet,
        "task",
        "cancel",
        "1",
        "--keystore",
        str(keystore),
        env={"GM_PASSWORD": "wrong"},
    )
    assert "cannot decrypt" in readable_error(bad)
    good = runner.invoke(
        sponsor_app,
        [
            "task",
            "create",
            "--validation",
            str(files / "val.csv"),
            "--bounty",
            "1",
            "--evaluator",
            "dev:1",
            "--keystore",
            str(keystore),
            "--data-dir",
            str(devnet.path.parent),
        ],
        env={"GM_PASSWORD": "correct horse"},
    )
    assert good.exit_code == 0, good.output
    assert chain.task(chain.task_count()).sponsor == account.address


def test_a_miner_without_an_account_is_told_how_to_name_one(devnet: Devnet) -> None:
    no_key = invoke(miner_app, devnet, "claim", "--task", "1")

    assert "name an account" in readable_error(no_key)


def test_key_prints_the_account_key_sponsors_seal_to(devnet: Devnet) -> None:
    result = invoke(marketplace_app, devnet, "key", "--account", "1")

    assert result.exit_code == 0, result.output
    account = dev_account(devnet.info, 1)
    assert f"{account.address}={account_key(account).public_hex}" in result.output

    result = invoke(marketplace_app, devnet, "key", "--account", "1", "--paillier")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{account.address}={paillier_hex(account)}"
    assert len(paillier_hex(account)) == 512  # a 2048-bit n


def test_miner_watch_submits_to_every_open_task_its_data_fits(devnet: Devnet, files: Path) -> None:
    chain = chain_of(devnet)
    assert create(devnet, files).exit_code == 0
    task_id = chain.task_count()
    proposed = invoke(
        sponsor_app,
        devnet,
        "arch",
        "propose",
        "--task",
        str(task_id),
        "--spec",
        str(files / "mlp.json"),
        "--seed",
        "1",
        "--account",
        "2",
    )
    assert proposed.exit_code == 0, proposed.output
    miner = devnet.info.accounts[6].address

    watched = invoke(
        miner_app,
        devnet,
        "watch",
        "--data",
        str(files / "val.csv"),
        "--account",
        "6",
        "--iterations",
        "1",
        "--epochs",
        "1",
    )

    assert watched.exit_code == 0, watched.output
    mine = [r for r in chain.nodes(task_id) if r.author == miner]
    assert [(r.round, r.parents) for r in mine] == [(0, (1,))]  # on the architecture


def test_miner_run_trains_with_the_prox_mu_flag(
    devnet: Devnet, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = chain_of(devnet)
    assert create(devnet, files).exit_code == 0
    task_id = chain.task_count()
    spec = str(files / "mlp.json")
    proposed = invoke(
        sponsor_app,
        devnet,
        "arch",
        "propose",
        "--task",
        str(task_id),
        "--spec",
        spec,
        "--seed",
        "1",
        "--account",
        "2",
    )
    assert proposed.exit_code == 0, proposed.output
    configs: list[TrainConfig] = []

    class Recording(Trainer):
        def train(self, spec, weights, dataset, config, progress=None):  # type: ignore[no-untyped-def]
            configs.append(config)
            return super().train(spec, weights, dataset, config, progress)

    monkeypatch.setattr(miner_cli, "Trainer", Recording)

    ran = invoke(
        miner_app,
        devnet,
        "run",
        "--task",
        str(task_id),
        "--data",
        str(files / "val.csv"),
        "--account",
        "7",
        "--once",
        "--epochs",
        "1",
        "--prox-mu",
        "0.25",
    )

    assert ran.exit_code == 0, ran.output
    assert [config.prox_mu for config in configs] == [0.25]
    assert "round 0: submitted node" in ran.output


def test_a_negative_prox_mu_is_one_readable_line(files: Path) -> None:
    result = runner.invoke(
        miner_app,
        ["run", "--task", "1", "--data", str(files / "val.csv"), "--prox-mu", "-1"],
        env={"GM_DATA_DIR": str(files / "state")},
    )

    assert readable_error(result) == (
        "error: TrainConfig.prox_mu: Input should be greater than or equal to 0"
    )


def test_deploy_puts_a_fresh_marketplace_on_the_chain_and_prints_its_address(
    devnet: Devnet, tmp_path: Path
) -> None:
    account, keystore = funded_keystore(devnet, tmp_path / "owner.json", "pw", 1)
    chain = chain_of(devnet)

    result = runner.invoke(
        marketplace_app,
        ["deploy", "--rpc", devnet.info.rpc_url, "--keystore", str(keystore)],
        env={"GM_PASSWORD": "pw", "GM_DATA_DIR": str(tmp_path / "nothing")},
    )

    assert result.exit_code == 0, result.output
    address = result.output.strip().splitlines()[-1].removeprefix("GM_CONTRACT=")
    assert address != devnet.info.contract
    fresh = ChainClient(chain.w3, address)
    assert fresh.task_count() == 0
    assert fresh.min_window() == 3600  # a public chain's: an hour, unless --min-window says less
    assert chain.w3.eth.get_transaction_count(account.address) == 1


def test_engines_status_of_a_folder_with_nothing_running_says_so_and_exits_3(
    tmp_path: Path,
) -> None:
    result = runner.invoke(marketplace_app, ["engines", "status", "--folder", str(tmp_path)])
    assert result.exit_code == 3
    assert result.output.splitlines() == ["anvil: stopped", "ipfs: stopped"]
    stopped = runner.invoke(marketplace_app, ["engines", "stop", "--folder", str(tmp_path)])
    assert stopped.exit_code == 0
    assert stopped.output.splitlines() == ["ipfs: was not running", "anvil: was not running"]


def test_blobs_push_without_an_ipfs_node_is_told_to_name_one(devnet: Devnet) -> None:
    result = invoke(marketplace_app, devnet, "blobs", "push")
    assert readable_error(result) == (
        "error: name the IPFS node to push to: --ipfs URL (or GM_IPFS_URL)"
    )


def test_index_follows_the_devnets_market_into_sqlite_and_resumes(
    devnet: Devnet, files: Path, tmp_path: Path
) -> None:
    assert create(devnet, files).exit_code == 0
    database = tmp_path / "index.sqlite"
    args = ["index", "--once", "--confirmations", "0", "--index", str(database)]
    head = chain_of(devnet).w3.eth.block_number

    first = invoke(marketplace_app, devnet, *args)
    again = invoke(marketplace_app, devnet, *args)

    assert first.exit_code == 0, first.output
    tasks = chain_of(devnet).task_count()
    events = len(chain_of(devnet).logs(devnet.info.deploy_block, head))  # earlier tests' too
    assert f"indexed to block {head} (head {head}): {events} events" in first.output
    assert f"indexed to block {head} (head {head}): 0 events" in again.output
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (tasks,)


def test_miner_claim_on_an_unrevealed_task_refunds_the_miners_deposits_once(
    devnet: Devnet, files: Path
) -> None:
    """`miner claim` refunds through `claims.collect`, with no trainer or data path."""
    chain = chain_of(devnet)
    assert create(devnet, files).exit_code == 0
    task_id = chain.task_count()
    spec = str(files / "mlp.json")
    args = ("--task", str(task_id), "--spec", spec, "--seed", "1", "--account", "2")
    assert invoke(sponsor_app, devnet, "arch", "propose", *args).exit_code == 0
    ran = invoke(
        miner_app,
        devnet,
        "run",
        *("--task", str(task_id), "--data", str(files / "val.csv"), "--account", "7"),
        *("--once", "--epochs", "1"),
    )
    assert ran.exit_code == 0, ran.output
    miner = devnet.info.accounts[7].address
    (update,) = [r.node_id for r in chain.nodes(task_id) if r.author == miner]
    advance_chain_to(chain.w3, chain.task(task_id).reveal_deadline)  # the sponsor never reveals
    assert chain.phase(task_id) is Phase.UNREVEALED
    before = chain.w3.eth.get_balance(miner)

    claimed = invoke(miner_app, devnet, "claim", "--task", str(task_id), "--account", "7")

    assert claimed.exit_code == 0, claimed.output
    assert claimed.output.splitlines() == [f"refunded node {update}"]
    (refund,) = chain.events(Refunded, task_id=task_id)
    assert (refund.author, refund.node_id) == (miner, update)
    # its 0.01 deposit and one of two shares (architecture, update) of the withheld 10 ETH bounty
    assert refund.amount == ETHER // 100 + 5 * ETHER
    paid = spent(chain.w3, refund.tx_hash)
    assert chain.w3.eth.get_balance(miner) == before + refund.amount - paid
    assert not chain.is_refunded(task_id, 1)  # the architecture is the scientist's
    state = json.loads((devnet.path.parent / "state" / f"miner-{miner}.json").read_text())
    assert state["tasks"][str(task_id)]["claimed"] == "refunded"
    again = invoke(miner_app, devnet, "claim", "--task", str(task_id), "--account", "7")
    assert again.output.splitlines() == ["nothing to refund"]

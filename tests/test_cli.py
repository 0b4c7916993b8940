"""The command lines through Typer's CliRunner against an in-process devnet: help, keys, the
sponsor's commands, and user mistakes as one readable line with exit code 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from typer.main import get_command
from typer.testing import CliRunner
from web3 import Web3

from marketplace.chain import ChainClient
from marketplace.checks import decode_architecture
from marketplace.cli import app as marketplace_app
from marketplace.connect import dev_account
from marketplace.devnet import Devnet, start_devnet
from marketplace.evaluation import to_csv
from marketplace.messages import Phase
from marketplace.shards import digits_splits
from marketplace.storage import LocalStore
from marketplace.tasks import account_key, read_spec
from miner.cli import app as miner_app
from sponsor_cli.app import app as sponsor_app

ETHER = 10**18
runner = CliRunner()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = start_devnet(tmp_path_factory.mktemp("devnet"), port=0)
    yield net
    net.stop()


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


def one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:"), result.output
    return " ".join(lines)


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


def test_task_create_seals_to_the_dev_evaluator_and_escrows(devnet: Devnet, files: Path) -> None:
    chain = chain_of(devnet)
    before = chain.task_count()

    result = create(devnet, files)

    assert result.exit_code == 0, result.output
    task_id = before + 1
    assert f"created task {task_id}" in result.output
    task = chain.task(task_id)
    assert (task.bounty, task.deposit, task.rounds) == (10 * ETHER, ETHER // 100, 4)
    spec = read_spec(chain, LocalStore(devnet.path.parent / "blobs"), task_id)
    assert spec.evaluator_keys == (account_key(dev_account(devnet.info, 1)).public_hex,)
    assert spec.validation_cid and spec.sponsor_key

    listed = invoke(sponsor_app, devnet, "task", "list")
    assert listed.exit_code == 0 and "rounds" in listed.output
    shown = invoke(sponsor_app, devnet, "task", "show", str(task_id), "--json")
    assert json.loads(shown.output)["phase"] == "rounds"


def test_cancel_refunds_the_bounty_and_only_the_sponsor_may(devnet: Devnet, files: Path) -> None:
    chain = chain_of(devnet)
    assert create(devnet, files).exit_code == 0
    task_id = chain.task_count()

    refused = invoke(sponsor_app, devnet, "task", "cancel", str(task_id), "--account", "3")
    assert "NotSponsor" in one_error_line(refused)
    sponsor = devnet.info.accounts[0].address
    before = chain.balance(sponsor)
    done = invoke(sponsor_app, devnet, "task", "cancel", str(task_id), "--account", "0")

    assert done.exit_code == 0, done.output
    assert chain.phase(task_id) is Phase.CANCELLED
    gained = chain.balance(sponsor) - before
    assert 10 * ETHER - ETHER // 100 < gained < 10 * ETHER  # the bounty, less the gas


def test_arch_propose_publishes_a_bundle_that_round_trips(devnet: Devnet, files: Path) -> None:
    chain = chain_of(devnet)
    assert create(devnet, files).exit_code == 0
    task_id = chain.task_count()

    result = invoke(
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

    assert result.exit_code == 0, result.output
    (record,) = chain.nodes(task_id)
    store = LocalStore(devnet.path.parent / "blobs")
    model, weights = decode_architecture(store.get(record.cid, 1 << 20), 1 << 20)
    assert model.layers[0].out_features == 10  # type: ignore[union-attr]
    assert sorted(weights) == ["0.bias", "0.weight"]


def test_a_keystore_signs_with_the_password_from_the_environment(
    devnet: Devnet, files: Path, tmp_path: Path
) -> None:
    account = Account.create()
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(account.key, "correct horse")))
    chain = chain_of(devnet)
    funder = devnet.info.accounts[8].address
    chain.w3.eth.send_transaction({"from": funder, "to": account.address, "value": 20 * ETHER})

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
    assert "cannot decrypt" in one_error_line(bad)
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


def test_user_mistakes_are_one_readable_line(devnet: Devnet, files: Path) -> None:
    missing = invoke(
        sponsor_app,
        devnet,
        "task",
        "create",
        "--validation",
        "nope.csv",
        "--bounty",
        "1",
        "--evaluator",
        "dev:1",
        "--account",
        "0",
    )
    assert "cannot read nope.csv" in one_error_line(missing)
    assert "not an amount" in one_error_line(create(devnet, files, "--bounty", "abc"))
    assert "UnknownTask" in one_error_line(invoke(sponsor_app, devnet, "task", "show", "99"))
    (files / "bad.json").write_text("{not json")
    assert "bad task spec" in one_error_line(
        create(devnet, files, "--spec", str(files / "bad.json"))
    )
    no_key = invoke(miner_app, devnet, "claim", "--task", "1")
    assert "name an account" in one_error_line(no_key)
    assert "dev:N" in one_error_line(
        invoke(
            sponsor_app,
            devnet,
            "task",
            "create",
            "--validation",
            str(files / "val.csv"),
            "--bounty",
            "1",
            "--evaluator",
            "0x1234",
            "--account",
            "0",
        )
    )


def test_key_prints_the_account_key_sponsors_seal_to(devnet: Devnet) -> None:
    result = invoke(marketplace_app, devnet, "key", "--account", "1")

    assert result.exit_code == 0, result.output
    account = dev_account(devnet.info, 1)
    assert f"{account.address}={account_key(account).public_hex}" in result.output


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

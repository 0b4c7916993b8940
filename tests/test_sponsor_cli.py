"""`sponsor` through Typer's CliRunner against one devnet: task create / list / show / cancel,
arch propose, claim, and user mistakes as one readable error with exit code 1."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from typer.testing import CliRunner, Result
from web3 import Web3
from web3.exceptions import TimeExhausted, Web3RPCError

from marketplace.chain.client import ChainClient
from marketplace.dev.devnet import Devnet
from marketplace.protocol.tasks import account_key, paillier_hex, read_spec
from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.rules.messages import Metric, Phase
from marketplace.runtime.connect import dev_account
from marketplace.storage.stores import LocalStore
from marketplace.wire.architecture import decode_architecture
from sponsor_cli.app import app
from tests.helpers import readable_error

ETHER = 10**18
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """val.csv (label, x0..x63; six rows) and mlp.json (a 64 -> 10 linear model)."""
    folder = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    rows = Dataset(
        features=rng.random((6, 64), dtype=np.float32),
        labels=np.arange(6, dtype=np.int64) % 10,
        num_classes=10,
    )
    (folder / "val.csv").write_bytes(to_csv(rows))
    layer = {"type": "linear", "in_features": 64, "out_features": 10}
    (folder / "mlp.json").write_text(json.dumps({"input_shape": [64], "layers": [layer]}))
    return folder


@pytest.fixture(scope="module")
def chain(devnet: Devnet) -> ChainClient:
    return ChainClient(Web3(Web3.HTTPProvider(devnet.info.rpc_url)), devnet.info.contract)


def sponsor(devnet: Devnet, *args: str) -> Result:
    return runner.invoke(app, [*args, "--data-dir", str(devnet.path.parent)])


def create(devnet: Devnet, files: Path, *extra: str) -> Result:
    return sponsor(
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
        "0",
        *extra,
    )


@pytest.fixture(scope="module")
def task_one(devnet: Devnet, files: Path) -> Result:
    return create(devnet, files)


def test_create_escrows_the_bounty_and_seals_to_the_dev_evaluator(
    task_one: Result, devnet: Devnet, chain: ChainClient
) -> None:
    assert task_one.exit_code == 0, task_one.output
    assert "created task 1" in task_one.output
    assert chain.task(1).bounty == 10 * ETHER
    spec = read_spec(chain, LocalStore(devnet.path.parent / "blobs"), 1)
    assert spec.evaluator_keys == (account_key(dev_account(devnet.info, 1)).public_hex,)
    assert spec.validation_cid


def test_list_shows_the_task(task_one: Result, devnet: Devnet) -> None:
    result = sponsor(devnet, "task", "list")

    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ 1 "))
    assert "rounds" in row and "10 ETH" in row


def test_show_json_has_the_phase(task_one: Result, devnet: Devnet) -> None:
    result = sponsor(devnet, "task", "show", "1", "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["task_id"], shown["phase"]) == (1, Phase.ROUNDS.name.lower())
    assert shown["task"]["bounty"] == 10 * ETHER


def test_arch_propose_with_a_seed_creates_node_1_whose_bundle_round_trips(
    task_one: Result, devnet: Devnet, files: Path, chain: ChainClient
) -> None:
    result = sponsor(
        devnet, "arch", "propose", "--task", "1", "--spec", str(files / "mlp.json"), "--seed", "1"
    )
    assert readable_error(result).startswith("error: name an account")  # who proposes?

    result = sponsor(
        devnet,
        "arch",
        "propose",
        "--task",
        "1",
        "--spec",
        str(files / "mlp.json"),
        "--seed",
        "1",
        "--account",
        "2",
    )

    assert result.exit_code == 0, result.output
    assert "node 1" in result.output
    (record,) = chain.nodes(1)
    assert (record.node_id, record.author) == (1, devnet.info.accounts[2].address)
    store = LocalStore(devnet.path.parent / "blobs")
    model, weights = decode_architecture(store.get(record.cid, 1 << 20), 1 << 20)
    assert model.input_shape == (64,)
    assert sorted(weights) == ["0.bias", "0.weight"]
    tree = sponsor(devnet, "task", "show", "1")
    assert tree.exit_code == 0, tree.output
    assert "1 architecture" in tree.output


def test_cancel_refunds_the_bounty_less_gas(
    devnet: Devnet, files: Path, chain: ChainClient
) -> None:
    assert create(devnet, files).exit_code == 0
    task_id = chain.task_count()
    account = devnet.info.accounts[0].address
    before = chain.balance(account)

    result = sponsor(devnet, "task", "cancel", str(task_id), "--account", "0")

    assert result.exit_code == 0, result.output
    (tx_hash,) = chain.w3.eth.get_block("latest")["transactions"]  # the cancel, mined alone
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    gas = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
    assert chain.balance(account) == before + 10 * ETHER - gas
    assert chain.phase(task_id) is Phase.CANCELLED
    assert "TaskCancelled: 10 ETH" in result.output


def test_a_negated_sse_task_has_regression_targets(
    devnet: Devnet, files: Path, chain: ChainClient
) -> None:
    result = create(devnet, files, "--metric", "negated_sse")

    assert result.exit_code == 0, result.output
    spec = read_spec(chain, LocalStore(devnet.path.parent / "blobs"), chain.task_count())
    assert spec.data.num_classes is None


def test_claim_before_any_agreed_root_says_so(task_one: Result, devnet: Devnet) -> None:
    result = sponsor(devnet, "claim", "--task", "1", "--account", "2")

    assert "no agreed payout root" in readable_error(result)


def test_user_mistakes_are_one_readable_error(
    task_one: Result, devnet: Devnet, files: Path
) -> None:
    missing = sponsor(
        devnet,
        "task",
        "create",
        "--validation",
        str(files / "nope.csv"),
        "--bounty",
        "1",
        "--evaluator",
        "dev:1",
        "--account",
        "0",
    )
    assert "cannot read" in readable_error(missing)
    assert "not an amount: 'abc'" in readable_error(create(devnet, files, "--bounty", "abc"))
    assert "NotSponsor" in readable_error(sponsor(devnet, "task", "cancel", "1", "--account", "3"))
    assert "UnknownTask" in readable_error(sponsor(devnet, "task", "show", "99"))
    huge = files / "huge.npz"  # a few hundred bytes whose header claims (2^34, 64) float64
    huge.write_bytes(_npz_claiming((2**34, 64)))
    assert readable_error(create(devnet, files, "--validation", str(huge))) == (
        "error: array 'x' declares shape (17179869184, 64) of float64: 8,796,093,022,208 bytes, "
        "over the cap of 67,108,864"
    )
    judge = sponsor(
        devnet,
        "task",
        "create",
        "--validation",
        str(files / "val.csv"),
        "--bounty",
        "1",
        "--evaluator",
        "dev:0",
        "--account",
        "0",
    )
    assert readable_error(judge) == "error: the sponsor cannot be one of its own task's evaluators"
    (files / "bad.json").write_text('{"name": "x", "metric": ')
    assert "bad task spec" in readable_error(
        create(devnet, files, "--spec", str(files / "bad.json"))
    )


def _npz_claiming(shape: tuple[int, ...]) -> bytes:
    """An .npz whose 'x' header declares `shape` of float64 but holds 64 bytes."""
    members = {}
    for name, declared in (("x", shape), ("y", shape[:1])):
        header = io.BytesIO()
        fields = {"descr": "<f8", "fortran_order": False, "shape": declared}
        np.lib.format.write_array_header_1_0(header, fields)
        members[f"{name}.npy"] = header.getvalue() + bytes(64)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "extra",
    [
        ("--evaluator", "0x" + "12" * 20 + "=" + "zz" * 32),  # not hex
        ("--evaluator", "0x1234=" + "ab" * 32),  # not an address
        ("--token", "nonsense"),
    ],
)
def test_malformed_addresses_and_keys_are_readable_errors(
    task_one: Result, devnet: Devnet, files: Path, extra: tuple[str, str]
) -> None:
    assert readable_error(create(devnet, files, *extra))


def test_a_negative_seed_is_a_readable_error(task_one: Result, devnet: Devnet, files: Path) -> None:
    result = sponsor(
        devnet,
        "arch",
        "propose",
        "--task",
        "1",
        "--spec",
        str(files / "mlp.json"),
        "--seed",
        "-1",
        "--account",
        "2",
    )

    assert "--seed" in readable_error(result)


def test_an_aggregate_task_carries_the_key_holders_paillier_key(
    devnet: Devnet, files: Path, chain: ChainClient
) -> None:
    result = create(devnet, files, "--aggregate", "dev:1", "--clip", "0.1", "--max-miners", "8")

    assert result.exit_code == 0, result.output
    spec = read_spec(chain, LocalStore(devnet.path.parent / "blobs"), chain.task_count())
    holder = dev_account(devnet.info, 1)
    assert spec.aggregation is not None
    assert spec.aggregation.key_holder == holder.address
    assert spec.aggregation.paillier_n == paillier_hex(holder)
    assert (spec.aggregation.clip, spec.aggregation.max_miners) == (0.1, 8)
    assert spec.aggregates(0) and spec.aggregates(3)

    some = create(devnet, files, "--aggregate", "dev:1", "--aggregate-rounds", "2, 1")
    assert some.exit_code == 0, some.output
    spec = read_spec(chain, LocalStore(devnet.path.parent / "blobs"), chain.task_count())
    assert spec.aggregation is not None and spec.aggregation.rounds == (1, 2)
    assert not spec.aggregates(0) and spec.aggregates(1) and spec.aggregates(2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--aggregate", "dev:2"), "is not the task's evaluator"),
        (("--aggregate", "0x" + "12" * 20 + "=" + "ab" * 8), "bad --aggregate: paillier_n"),
        (("--aggregate", "nonsense"), "--aggregate is ADDRESS=PAILLIER_N"),
        (("--aggregate", "dev:1", "--max-miners", "1"), "bad --aggregate: max_miners"),
        (("--aggregate", "dev:1", "--aggregate-rounds", "one"), "takes round numbers"),
    ],
)
def test_a_bad_aggregation_is_a_readable_error(
    devnet: Devnet, files: Path, extra: tuple[str, ...], message: str
) -> None:
    assert message in readable_error(create(devnet, files, *extra))


def test_create_infers_a_30_feature_binary_schema_and_says_so(
    devnet: Devnet, files: Path, chain: ChainClient
) -> None:
    rng = np.random.default_rng(1)
    rows = Dataset(rng.random((8, 30), dtype=np.float32), np.arange(8, dtype=np.int64) % 2, 2)
    (files / "cancer.csv").write_bytes(to_csv(rows))

    result = create(devnet, files, "--validation", str(files / "cancer.csv"))

    assert result.exit_code == 0, result.output
    task_id = chain.task_count()
    assert result.output.splitlines()[1] == (
        "  schema: 30 features, label column 'label', 2 classes (accuracy), "
        "inferred from cancer.csv"
    )
    spec = read_spec(chain, LocalStore(devnet.path.parent / "blobs"), task_id)
    assert (spec.data.num_features, spec.data.num_classes, spec.metric) == (30, 2, Metric.ACCURACY)
    assert result.output.splitlines()[-2:] == [
        f"  next: data scientists propose architectures (sponsor arch propose --task {task_id}), "
        "miners train them",
        f"  after the last round: sponsor task reveal {task_id}",
    ]


def test_create_sets_the_spec_settings_a_sponsor_chooses(
    devnet: Devnet, files: Path, chain: ChainClient
) -> None:
    default = create(devnet, files)
    assert default.exit_code == 0, default.output
    store = LocalStore(devnet.path.parent / "blobs")
    spec = read_spec(chain, store, chain.task_count())
    assert (spec.max_samples_credited, spec.no_update_tolerance, spec.min_gain) == (
        1_000_000,
        1e-6,
        2,
    )
    assert (spec.max_submissions_per_round, spec.class_guard_bps) == (1, 2_000)

    chosen = create(
        devnet,
        files,
        "--max-samples-credited",
        "5000",
        "--no-update-tolerance",
        "0.001",
        "--min-gain",
        "3",
        "--max-submissions-per-round",
        "2",
        "--class-guard",
        "0",
    )

    assert chosen.exit_code == 0, chosen.output
    spec = read_spec(chain, store, chain.task_count())
    assert (spec.max_samples_credited, spec.no_update_tolerance, spec.min_gain) == (5000, 0.001, 3)
    assert (spec.max_submissions_per_round, spec.class_guard_bps) == (2, 0)


REFUSED = 'No valid "from" key was provided in the transaction'


@pytest.mark.parametrize(
    ("failure", "line"),
    [
        (
            Web3RPCError(
                str({"code": -32000, "message": REFUSED}),
                rpc_response={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "error": {"code": -32000, "message": REFUSED},
                },
            ),
            f"error: the node refused: {REFUSED}",
        ),
        (
            requests.exceptions.ConnectionError("connection refused"),
            "error: cannot reach the Ethereum node: ConnectionError",
        ),
        (
            TimeExhausted("Transaction 0xab is not in the chain after 120 seconds"),
            "error: the transaction was not mined in time (it may still be): Transaction 0xab "
            "is not in the chain after 120 seconds",
        ),
    ],
)
def test_a_node_that_refuses_or_is_away_is_one_readable_line(
    task_one: Result,
    devnet: Devnet,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    line: str,
) -> None:
    def refuse(self: ChainClient, sender: str, task_id: int) -> None:
        raise failure

    monkeypatch.setattr(ChainClient, "cancel_task", refuse)

    assert readable_error(sponsor(devnet, "task", "cancel", "1", "--account", "0")) == line

"""The typed events: one model per event of the ABI, fields named and typed as the ABI says;
a transaction's events equal the same events read back from the log."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from marketplace.chain.abi import contract_artifact
from marketplace.chain.client import ChainClient
from marketplace.chain.events import EVENTS, ChainEvent, TaskCreated, UpdateSubmitted
from marketplace.wire.crypto import sha256
from tests.test_indexer import CID, create, submit

LOCATION = ["block_number", "tx_hash", "log_index", "block_hash"]
PYTHON_TYPES = {"address": "str", "bytes32": "bytes", "string": "str"}


def python_type(abi_type: str) -> str:
    """The annotation an argument of `abi_type` has in its model."""
    if abi_type.endswith("[]"):
        return f"tuple[{python_type(abi_type[:-2])}, ...]"
    return "int" if abi_type.startswith("uint") else PYTHON_TYPES[abi_type]


def test_every_abi_event_has_a_model_with_its_arguments_in_order_and_typed() -> None:
    abi_events = {i["name"]: i for i in contract_artifact()["abi"] if i["type"] == "event"}
    assert sorted(EVENTS) == sorted(abi_events)
    for name, item in abi_events.items():
        kind = EVENTS[name]
        hints = typing.get_type_hints(kind)
        fields = list(kind.model_fields)
        assert fields[: len(LOCATION)] == LOCATION, name
        assert fields[len(LOCATION) :] == [to_snake(i["name"]) for i in item["inputs"]], name
        for arg in item["inputs"]:
            field = to_snake(arg["name"])
            shown = str(hints[field]).replace("<class '", "").replace("'>", "")
            assert shown == python_type(arg["type"]), (name, field)
            assert kind.model_fields[field].alias == arg["name"], (name, field)


def test_a_model_refuses_a_value_of_another_type() -> None:
    place = {"block_number": 1, "tx_hash": "0x", "log_index": 0, "task_id": 1}
    with pytest.raises(ValidationError):
        UpdateSubmitted(**place, node_id=2, author="0x", parent="1", round=0, samples=1,
                        epsilon=0, digest=b"", cid="")  # fmt: skip


def test_a_transactions_events_equal_the_logs_and_name_their_abi_arguments(
    market: ChainClient, accounts: list[str]
) -> None:
    task_id = create(market, accounts)
    market.propose_architecture(accounts[2], task_id, sha256(b"arch"), CID)
    result = market.submit_update(accounts[4], task_id, 1, 7, sha256(b"u"), CID)
    node = submit(market, accounts[5], task_id, "v")

    sent = result.event(UpdateSubmitted)
    [read, other] = market.events(UpdateSubmitted, task_id=task_id)
    assert read == sent and (sent.node_id, other.node_id) == (2, node)
    assert market.events(UpdateSubmitted, author=accounts[5]) == [other]
    assert sent.arguments() == {
        "task_id": task_id,
        "node_id": 2,
        "author": accounts[4],
        "parent": 1,
        "round": 0,
        "samples": 7,
        "epsilon": 0,
        "digest": sha256(b"u"),
        "cid": CID,
    }
    assert sent.abi_arguments() == {
        "taskId": task_id,
        "nodeId": 2,
        "author": accounts[4],
        "parent": 1,
        "round": 0,
        "samples": 7,
        "epsilon": 0,
        "digest": sha256(b"u"),
        "cid": CID,
    }
    [created] = market.events(TaskCreated, task_id=task_id)
    assert isinstance(created, ChainEvent) and created.name == "TaskCreated"
    assert created.evaluators == (accounts[1],)

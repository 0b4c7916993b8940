"""The contract's custom errors against the client and the tests: each has its Python class,
generated from the ABI (`marketplace/chain/reverts.py`, current with the artifact), and each is
named (`reverts.<Name>`) by at least one test, so that the rule "every custom error is triggered
by a test that names it" cannot silently regress when an error is added."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.abi import contract_artifact
from marketplace.dev import revertgen
from marketplace.rules.messages import Phase

TESTS_DIR = Path(__file__).resolve().parent
ABI = {item["name"]: item for item in contract_artifact()["abi"] if item["type"] == "error"}
ABI_ERRORS = sorted(ABI)


def _test_sources() -> dict[str, str]:
    """The text of every test module but this one (which names no error on purpose)."""
    return {
        path.name: path.read_text()
        for path in sorted(TESTS_DIR.glob("test_*.py"))
        if path.resolve() != Path(__file__).resolve()
    }


def test_abi_declares_the_errors_of_the_contract() -> None:
    # Guards the meta-tests below against passing vacuously on an empty or wrong artifact.
    assert len(ABI_ERRORS) == len(set(ABI_ERRORS)) >= 29
    assert {"UnknownTask", "ZeroBounty", "PaymentFailed"} <= set(ABI_ERRORS)


def test_generated_reverts_module_is_current_with_the_artifact() -> None:
    assert revertgen.OUTPUT.read_text() == revertgen.current(), (
        "marketplace/chain/reverts.py is stale: run scripts/gen_reverts.py (make build)"
    )


@pytest.mark.parametrize("name", ABI_ERRORS)
def test_abi_error_has_a_contract_revert_class_with_its_selector_and_arguments(name: str) -> None:
    cls = getattr(reverts, name, None)
    assert isinstance(cls, type), f"marketplace.chain.reverts has no class {name}"
    assert issubclass(cls, errors.ContractRevert)
    signature = f"{name}({','.join(i['type'] for i in ABI[name]['inputs'])})"
    assert keccak(text=signature)[:4] == cls.SELECTOR
    assert reverts.BY_SELECTOR[cls.SELECTOR] is cls
    assert tuple((i["name"], i["type"]) for i in ABI[name]["inputs"]) == cls.ARGUMENTS


def test_every_contract_revert_class_is_an_abi_error() -> None:
    classes = {
        name
        for name, value in vars(reverts).items()
        if isinstance(value, type) and issubclass(value, errors.ContractRevert)
    }
    assert (
        classes - {"ContractRevert", "PhaseRevert"}
        == set(ABI_ERRORS)
        == set(cls.__name__ for cls in reverts.BY_SELECTOR.values())
    )
    # The client-only fallback for revert data no ABI error matches stays hand-written.
    assert not hasattr(reverts, "UnknownRevert")


def test_wrong_phase_names_the_current_and_allowed_phases() -> None:
    refused = reverts.WrongPhase(
        taskId=3, current=Phase.REVEAL, allowed=errors.phase_mask(Phase.CLAIMS, Phase.CLOSED)
    )
    assert refused.allowed == (Phase.CLAIMS, Phase.CLOSED)
    assert str(refused) == "task 3 is in phase Reveal; this needs Claims or Closed"


@pytest.mark.parametrize("name", ABI_ERRORS)
def test_abi_error_is_named_by_a_test(name: str) -> None:
    pattern = re.compile(rf"\breverts\.{name}\b")
    naming = [file for file, text in _test_sources().items() if pattern.search(text)]
    assert naming, f"no tests/test_*.py names reverts.{name}"

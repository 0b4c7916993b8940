"""The contract's custom errors against the client and the tests: each has its Python class,
and each is named (`errors.<Name>`) by at least one test, so that the rule "every custom error
is triggered by a test that names it" cannot silently regress when an error is added."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marketplace import errors
from marketplace.chain.abi import contract_artifact

TESTS_DIR = Path(__file__).resolve().parent
ABI_ERRORS = sorted(item["name"] for item in contract_artifact()["abi"] if item["type"] == "error")
# Python classes that stand for no contract error: the fallback for undecodable revert data.
CLIENT_ONLY = {"UnknownRevert"}


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


@pytest.mark.parametrize("name", ABI_ERRORS)
def test_abi_error_has_a_contract_revert_class(name: str) -> None:
    cls = getattr(errors, name, None)
    assert isinstance(cls, type), f"marketplace.errors has no class {name}"
    assert issubclass(cls, errors.ContractRevert)
    assert errors.revert_class(name) is cls


def test_every_contract_revert_class_is_an_abi_error() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, errors.ContractRevert)
        and value is not errors.ContractRevert
    }
    assert classes - CLIENT_ONLY == set(ABI_ERRORS)


@pytest.mark.parametrize("name", ABI_ERRORS)
def test_abi_error_is_named_by_a_test(name: str) -> None:
    pattern = re.compile(rf"\berrors\.{name}\b")
    naming = [file for file, text in _test_sources().items() if pattern.search(text)]
    assert naming, f"no tests/test_*.py names errors.{name}"

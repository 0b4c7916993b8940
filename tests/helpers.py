"""Small helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

from web3 import Web3

from marketplace.crypto import sha256, validation_commitment

ETHER = 10**18
VALIDATION_FILE = b"label,x0,x1\n1,0.5,0.25\n0,0.125,1.0\n"
SALT = bytes(range(32))


def commitment(file: bytes = VALIDATION_FILE, salt: bytes = SALT) -> bytes:
    """The validation commitment of `file` under `salt`."""
    return validation_commitment(sha256(file), salt)


def digest(label: str) -> bytes:
    """A distinct 32-byte digest per label, for blobs the tests do not need to hold."""
    return sha256(label.encode())


def spent(w3: Web3, tx_hash: str) -> int:
    """Wei the sender paid in gas for `tx_hash`."""
    receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])

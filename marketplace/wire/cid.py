"""CIDs computed without a node: exactly what `ipfs add --cid-version=1 --raw-leaves
--chunker=size-262144` returns with Kubo's default balanced layout (checked against a real IPFS
implementation by `tests/data/cid_vectors.json`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from marketplace.errors import BlobNotFound, IntegrityError

CHUNK_SIZE = 262_144
"""Kubo's default fixed-size chunker (`size-262144`)."""
MAX_LINKS = 174
"""Kubo's balanced builder: at most this many links per dag-pb node."""

_RAW = 0x55
_DAG_PB = 0x70
_SHA2_256 = 0x12
_UNIXFS_FILE = 2
_CID_RE = re.compile(r"b[a-z2-7]{58,120}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _pb_bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _cid_bytes(codec: int, block: bytes) -> bytes:
    """Binary CIDv1: version, codec, sha2-256 multihash of `block`."""
    return b"\x01" + _varint(codec) + bytes([_SHA2_256, 32]) + hashlib.sha256(block).digest()


def _cid_text(cid: bytes) -> str:
    """Multibase base32 lower case, no padding ("b" prefix), as Kubo prints CIDv1."""
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


@dataclass(frozen=True)
class _Node:
    """A built block as its parent sees it."""

    cid: bytes
    tsize: int  # the link's Tsize: this block plus every block below it
    filesize: int  # file bytes under this block


def _leaf(chunk: bytes | memoryview) -> _Node:
    return _Node(_cid_bytes(_RAW, bytes(chunk)), len(chunk), len(chunk))


def _parent(children: list[_Node]) -> _Node:
    """A dag-pb node holding a UnixFS File: Links (field 2) first, then Data (field 1)."""
    unixfs = _pb_varint(1, _UNIXFS_FILE) + _pb_varint(3, sum(c.filesize for c in children))
    unixfs += b"".join(_pb_varint(4, c.filesize) for c in children)  # blocksizes, unpacked
    links = b"".join(
        _pb_bytes(2, _pb_bytes(1, c.cid) + _pb_bytes(2, b"") + _pb_varint(3, c.tsize))
        for c in children
    )
    block = links + _pb_bytes(1, unixfs)
    return _Node(
        _cid_bytes(_DAG_PB, block),
        len(block) + sum(c.tsize for c in children),
        sum(c.filesize for c in children),
    )


def cid_of(data: bytes) -> str:
    """The CID Kubo returns for `data` added with CIDv1, raw leaves, 256 KiB chunks, balanced.

    One chunk (0 bytes included) is a raw block. More become raw leaves under dag-pb UnixFS
    File nodes of at most 174 links each, grouped level by level up to a single root, which
    is what Kubo's balanced builder produces (its rightmost partial subtrees included).
    """
    view = memoryview(data)
    if len(view) <= CHUNK_SIZE:
        return _cid_text(_leaf(view).cid)
    level = [_leaf(view[i : i + CHUNK_SIZE]) for i in range(0, len(view), CHUNK_SIZE)]
    while len(level) > 1:
        level = [_parent(level[i : i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)]
    return _cid_text(level[0].cid)


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def cid_binary(text: str) -> bytes | None:
    """A CIDv1 in base32 ("b", Kubo's choice) or base58btc ("z", js-ipfs's) as bytes."""
    try:
        if text[:1] in ("b", "B"):
            body = text[1:].upper()
            return base64.b32decode(body + "=" * (-len(body) % 8))
        if text[:1] == "z":
            n = 0
            for ch in text[1:]:
                n = n * 58 + _BASE58.index(ch)
            zeros = len(text[1:]) - len(text[1:].lstrip("1"))
            return b"\0" * zeros + n.to_bytes((n.bit_length() + 7) // 8, "big")
    except ValueError:
        return None
    return None


def check_cid(cid: str) -> str:
    """Refuse anything that is not a base32 CIDv1 (it never reaches a path or a URL)."""
    if not _CID_RE.fullmatch(cid):
        raise BlobNotFound(f"not a base32 CIDv1: {cid!r}")
    return cid


def verified_blob(cid: str, data: bytes) -> bytes:
    actual = cid_of(data)
    if actual != cid:
        raise IntegrityError(f"asked for {cid}, the {len(data)} bytes read hash to {actual}")
    return data

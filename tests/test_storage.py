"""Blob storage: CIDs against a real IPFS implementation, LocalStore, IpfsStore over a fake Kubo."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    IntegrityError,
    StorageError,
    StoreUnavailable,
)
from marketplace.storage import stores as storage
from marketplace.storage.stores import BlobStore, IpfsStore, LocalStore
from marketplace.wire.cid import CHUNK_SIZE, cid_of

MIB = 1024 * 1024
VECTORS_FILE = Path(__file__).parent / "data" / "cid_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text())
PAYLOAD = "hashlib.shake_256(b'gradient-marketplace cid vector ' + str(size).encode()).digest(size)"


def payload(size: int) -> bytes:
    """The bytes behind a vector, as the JSON's `payload` field documents."""
    return hashlib.shake_256(b"gradient-marketplace cid vector " + str(size).encode()).digest(size)


def vector_id(vector: dict[str, Any]) -> str:
    return str(vector["size"])


# --- the oracle: CIDs from js-ipfs -----------------------------------------------------


def test_vectors_document_how_their_bytes_are_made() -> None:
    assert VECTORS["payload"] == PAYLOAD
    sizes = {v["size"] for v in VECTORS["vectors"]}
    assert {0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 174 * CHUNK_SIZE + 1, 50 * MIB} <= sizes
    assert len(sizes) == len(VECTORS["vectors"]) >= 15


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=vector_id)
def test_cid_of_equals_the_cid_js_ipfs_returned(vector: dict[str, Any]) -> None:
    data = payload(vector["size"])
    assert hashlib.sha256(data).hexdigest() == vector["sha256"]  # the bytes the oracle hashed

    assert cid_of(data) == vector["cid"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=vector_id)
def test_local_store_names_blobs_like_js_ipfs(tmp_path: Path, vector: dict[str, Any]) -> None:
    data = payload(vector["size"])

    assert LocalStore(tmp_path).put(data) == vector["cid"]


def test_one_chunk_is_a_raw_block_and_more_are_a_dag_pb_root() -> None:
    # "bafkrei": CIDv1, raw (0x55), sha2-256; "bafybei": CIDv1, dag-pb (0x70), sha2-256.
    assert cid_of(b"").startswith("bafkrei")
    assert cid_of(bytes(CHUNK_SIZE)).startswith("bafkrei")
    assert cid_of(bytes(CHUNK_SIZE + 1)).startswith("bafybei")


# --- LocalStore ------------------------------------------------------------------------


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, MIB, 10 * MIB], ids=str
)
def test_local_store_round_trips(tmp_path: Path, size: int) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(size)

    cid = store.put(data)

    assert cid == cid_of(data)
    assert store.has(cid)
    assert store.get(cid, max_size=size) == data
    store.pin(cid)


def test_local_store_is_a_blob_store(tmp_path: Path) -> None:
    assert isinstance(LocalStore(tmp_path), BlobStore)
    assert isinstance(IpfsStore("http://127.0.0.1:5001", transport=FakeKubo()), BlobStore)


def test_putting_the_same_bytes_twice_is_a_no_op(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cid = store.put(b"same bytes")
    [path] = files_under(tmp_path)
    before = path.stat()

    assert store.put(b"same bytes") == cid

    assert files_under(tmp_path) == [path]
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_crash_before_rename_leaves_no_blob_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(CHUNK_SIZE + 1)
    cid = cid_of(data)
    replaced: list[tuple[str, str]] = []

    def crash(src: str, dst: str) -> None:
        replaced.append((str(src), str(dst)))
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.put(data)
    monkeypatch.undo()

    [(src, dst)] = replaced
    assert Path(src).parent == Path(dst).parent  # the temp file sat next to its final name
    assert Path(dst).name == cid
    assert files_under(tmp_path) == []
    assert not store.has(cid)
    with pytest.raises(BlobNotFound):
        store.get(cid, max_size=len(data))
    assert store.put(data) == cid
    assert store.get(cid, max_size=len(data)) == data


def test_a_temp_file_left_by_a_crash_is_ignored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = b"a blob whose write was cut short"
    cid = cid_of(data)
    shard = tmp_path / cid[-3:-1]
    shard.mkdir()
    (shard / ".tmp-crashed").write_bytes(data[:5])

    assert not store.has(cid)
    with pytest.raises(BlobNotFound):
        store.get(cid, max_size=100)
    assert store.put(data) == cid
    assert store.get(cid, max_size=100) == data


def test_tampered_blob_raises_integrity_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(3 * CHUNK_SIZE)
    cid = store.put(data)
    [path] = files_under(tmp_path)
    tampered = bytearray(data)
    tampered[CHUNK_SIZE + 7] ^= 1
    path.write_bytes(bytes(tampered))

    with pytest.raises(IntegrityError):
        store.get(cid, max_size=len(data))


def test_too_large_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    cid = store.put(bytes(1000))
    reads: list[Path] = []

    def spy(path: Path, limit: int) -> bytes:
        reads.append(path)
        return b""

    monkeypatch.setattr(storage, "_read_capped", spy)

    with pytest.raises(BlobTooLarge):
        store.get(cid, max_size=999)

    assert reads == []


def test_missing_blob_raises_blob_not_found(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cid = cid_of(b"never stored")

    assert not store.has(cid)
    with pytest.raises(BlobNotFound):
        store.get(cid, max_size=100)
    with pytest.raises(BlobNotFound):
        store.pin(cid)


@pytest.mark.parametrize("cid", ["../../etc/passwd", "", "QmNotBase32", "bAFK" + "a" * 55])
def test_a_malformed_cid_never_reaches_the_file_system(tmp_path: Path, cid: str) -> None:
    store = LocalStore(tmp_path / "store")

    assert not store.has(cid)
    with pytest.raises(BlobNotFound):
        store.get(cid, max_size=100)


# --- IpfsStore over a fake Kubo --------------------------------------------------------

API = "http://127.0.0.1:5001"


def multipart_file(request: httpx.Request) -> bytes:
    """The payload of the single file part of a multipart/form-data request."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    part = request.read().split(b"--" + boundary)[1]
    _, _, content = part.partition(b"\r\n\r\n")
    return content.removesuffix(b"\r\n")


def kubo_error(message: str) -> httpx.Response:
    return httpx.Response(500, json={"Message": message, "Code": 0, "Type": "error"})


class FakeKubo(httpx.MockTransport):
    """A Kubo RPC API in memory: blobs stored under `cid_of`, answered in small pieces."""

    def __init__(self, piece: int = 64 * 1024) -> None:
        super().__init__(self.handle)
        self.blobs: dict[str, bytes] = {}
        self.pins: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.piece = piece
        self.pieces_sent = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        endpoint = request.url.path.removeprefix("/api/v0")
        params = request.url.params
        assert request.method == "POST"
        if endpoint == "/add":
            data = multipart_file(request)
            cid = self.add_cid(data)
            self.blobs[cid] = data
            self.pins.add(cid)
            line = json.dumps({"Name": "blob", "Hash": cid, "Size": str(len(data))})
            return httpx.Response(200, text=line + "\n")
        cid = params["arg"]
        if cid not in self.blobs:
            return kubo_error("block was not found locally (offline): ipld: could not find node")
        if endpoint == "/cat":
            length = int(params.get("length", "-1"))
            data = self.cat(cid)
            return httpx.Response(200, content=self.pieces(data if length < 0 else data[:length]))
        if endpoint == "/block/stat":
            return httpx.Response(200, json={"Key": cid, "Size": len(self.blobs[cid])})
        if endpoint == "/pin/add":
            self.pins.add(cid)
            return httpx.Response(200, json={"Pins": [cid]})
        return httpx.Response(404, text="404 page not found")

    def add_cid(self, data: bytes) -> str:
        return cid_of(data)

    def cat(self, cid: str) -> bytes:
        return self.blobs[cid]

    def pieces(self, data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), self.piece):
            self.pieces_sent += 1
            yield data[i : i + self.piece]

    def endpoints(self) -> list[str]:
        return [r.url.path.removeprefix("/api/v0") for r in self.requests]


def ipfs_store(transport: httpx.BaseTransport, **kwargs: Any) -> IpfsStore:
    return IpfsStore(API, transport=transport, backoff=0.0, **kwargs)


def test_ipfs_store_round_trips_through_the_kubo_api() -> None:
    kubo = FakeKubo()
    store = ipfs_store(kubo)
    data = os.urandom(3 * CHUNK_SIZE + 5)

    cid = store.put(data)

    assert cid == cid_of(data)
    assert store.get(cid, max_size=len(data)) == data
    assert store.has(cid)
    store.pin(cid)
    assert kubo.endpoints() == ["/add", "/cat", "/block/stat", "/pin/add"]
    add, cat, stat, _ = kubo.requests
    assert dict(add.url.params) == {
        "cid-version": "1",
        "raw-leaves": "true",
        "chunker": "size-262144",
        "pin": "true",
    }
    assert dict(cat.url.params) == {"arg": cid, "length": str(len(data) + 1)}
    assert stat.url.params["offline"] == "true"
    assert stat.extensions["timeout"]["read"] == store.has_timeout


def test_ipfs_store_missing_cid_raises_blob_not_found() -> None:
    kubo = FakeKubo()
    store = ipfs_store(kubo)
    cid = cid_of(b"not on the node")

    assert not store.has(cid)
    with pytest.raises(BlobNotFound):
        store.get(cid, max_size=100)
    with pytest.raises(BlobNotFound):
        store.pin(cid)


def flaky(transport: httpx.MockTransport, failures: int) -> tuple[httpx.MockTransport, list[int]]:
    """A transport whose first `failures` requests cannot connect."""
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) <= failures:
            raise httpx.ConnectError("connection refused", request=request)
        return transport.handle_request(request)

    return httpx.MockTransport(handler), attempts


def test_connection_errors_are_retried_with_exponential_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(time, "sleep", delays.append)
    transport, attempts = flaky(FakeKubo(), failures=3)
    store = IpfsStore(API, retries=3, transport=transport, backoff=0.5)

    cid = store.put(b"worth the wait")

    assert cid == cid_of(b"worth the wait")
    assert len(attempts) == 4
    assert delays == [0.5, 1.0, 2.0]


def test_a_node_that_never_answers_raises_store_unavailable() -> None:
    transport, attempts = flaky(FakeKubo(), failures=10**6)
    store = ipfs_store(transport, retries=2)

    with pytest.raises(StoreUnavailable):
        store.put(b"nowhere to go")
    with pytest.raises(StoreUnavailable):
        store.get(cid_of(b"nowhere to go"), max_size=100)

    assert len(attempts) == 2 * 3


def test_a_timed_out_cat_raises_blob_not_found_without_retrying() -> None:
    attempts: list[httpx.Request] = []

    def hang(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    store = ipfs_store(httpx.MockTransport(hang))
    cid = cid_of(b"somewhere, maybe")

    with pytest.raises(BlobNotFound):
        store.get(cid, max_size=100)
    with pytest.raises(BlobNotFound):
        store.pin(cid)
    assert not store.has(cid)
    assert len(attempts) == 3


@pytest.fixture
def hanging_node() -> Iterator[str]:
    """A real HTTP server on loopback that never answers until the test ends."""
    release = threading.Event()

    class Hang(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            release.wait(10)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_node_that_hangs_is_cut_off_by_the_timeout(hanging_node: str) -> None:
    cid = cid_of(b"the node looks for it forever")
    started = time.monotonic()

    with IpfsStore(hanging_node, timeout=0.3, has_timeout=0.2) as store:
        with pytest.raises(BlobNotFound):
            store.get(cid, max_size=100)
        assert not store.has(cid)

    assert time.monotonic() - started < 3


def test_a_broken_answer_raises_store_unavailable_without_retrying() -> None:
    attempts: list[httpx.Request] = []

    def garbled(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.RemoteProtocolError("illegal header", request=request)

    store = ipfs_store(httpx.MockTransport(garbled))

    with pytest.raises(StoreUnavailable):
        store.put(b"data")
    assert len(attempts) == 1


def test_a_connection_lost_mid_cat_raises_store_unavailable() -> None:
    kubo = FakeKubo()
    data = os.urandom(MIB)
    cid = ipfs_store(kubo).put(data)

    def cut(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield data[:1000]
            raise httpx.ReadError("connection reset by peer", request=request)

        return httpx.Response(200, content=body())

    with pytest.raises(StoreUnavailable):
        ipfs_store(httpx.MockTransport(cut)).get(cid, max_size=len(data))


def test_corrupted_bytes_from_the_node_raise_integrity_error() -> None:
    class Corrupting(FakeKubo):
        def cat(self, cid: str) -> bytes:
            data = bytearray(self.blobs[cid])
            data[-1] ^= 0xFF
            return bytes(data)

    store = ipfs_store(Corrupting())
    data = os.urandom(2 * CHUNK_SIZE)
    cid = store.put(data)

    with pytest.raises(IntegrityError):
        store.get(cid, max_size=len(data))


def test_a_node_with_other_add_defaults_raises_integrity_error() -> None:
    class CidV0(FakeKubo):
        def add_cid(self, data: bytes) -> str:
            return "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"

    with pytest.raises(IntegrityError):
        ipfs_store(CidV0()).put(b"hello world")


def test_a_node_answering_in_base58btc_is_accepted() -> None:
    class JsIpfs(FakeKubo):
        def add_cid(self, data: bytes) -> str:
            # What js-ipfs's /api/v0/add answered for 0 bytes: the same CIDv1, in base58btc.
            return "zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW"

    assert (
        ipfs_store(JsIpfs()).put(b"")
        == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    )


def test_a_too_large_blob_is_refused_without_reading_it_all() -> None:
    kubo = FakeKubo(piece=64 * 1024)
    store = ipfs_store(kubo)
    cid = store.put(os.urandom(4 * MIB))

    def ignore_length(request: httpx.Request) -> httpx.Response:
        # A node that ignores `length` and would send all 4 MiB.
        cid = request.url.params["arg"]
        return httpx.Response(200, content=kubo.pieces(kubo.blobs[cid]))

    with pytest.raises(BlobTooLarge):
        ipfs_store(httpx.MockTransport(ignore_length)).get(cid, max_size=100_000)
    assert kubo.pieces_sent == 2  # 128 KiB of 4 MiB were pulled

    kubo.pieces_sent = 0
    with pytest.raises(BlobTooLarge):
        store.get(cid, max_size=100_000)
    assert kubo.requests[-1].url.params["length"] == "100001"
    assert kubo.pieces_sent == 2


def test_http_errors_other_than_not_found_raise_storage_error() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return kubo_error("context canceled")

    store = ipfs_store(httpx.MockTransport(broken))

    with pytest.raises(StorageError) as raised:
        store.put(b"data")
    assert type(raised.value) is StorageError
    assert "context canceled" in str(raised.value)


def test_local_store_lists_its_blobs_but_not_a_crashs_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cids = sorted(store.put(data) for data in (b"a", b"b" * 300_000, b""))
    any_folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    (any_folder / ".tmp-abc123").write_bytes(b"half a blob")
    assert store.cids() == cids

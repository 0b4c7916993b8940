"""Blob storage: `LocalStore` (a folder) and `IpfsStore` (Kubo's RPC API), both addressed by
the CID an IPFS node gives the same bytes (`marketplace.wire.cid`), so the chain can point at
either.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

import httpx

from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    IntegrityError,
    StorageError,
    StoreUnavailable,
)
from marketplace.storage.files import write_bytes_atomically
from marketplace.wire.cid import CHUNK_SIZE, check_cid, cid_binary, cid_of, verified_blob

log = logging.getLogger(__name__)


@runtime_checkable
class BlobStore(Protocol):
    """Where blobs live; every method names a blob by its CID (see `cid_of`)."""

    def put(self, data: bytes) -> str:
        """Store `data`; return its CID. Storing the same bytes twice is a no-op."""
        ...

    def get(self, cid: str, max_size: int) -> bytes:
        """The bytes under `cid`, checked against it; BlobTooLarge past `max_size` bytes."""
        ...

    def has(self, cid: str) -> bool: ...

    def pin(self, cid: str) -> None:
        """Keep the blob from garbage collection (BlobNotFound if it is not stored)."""
        ...


# --- LocalStore ------------------------------------------------------------------------


def _read_capped(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path` (the caller asks one more to see a file that grew)."""
    with path.open("rb") as f:
        return f.read(limit)


class LocalStore:
    """A content-addressed folder: the blob with CID `c` lives at `root/c[-3:-1]/c`.

    A write goes to a dot-file in the same folder, is fsynced, then renamed over the final
    name (`write_bytes_atomically`), so a crash leaves either the whole blob or no file under
    its CID; a stray temp file left by a crash is never read (no CID starts with a dot).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, cid: str) -> Path:
        check_cid(cid)
        return self.root / cid[-3:-1] / cid

    def put(self, data: bytes) -> str:
        cid = cid_of(data)
        path = self._path(cid)
        try:
            if path.stat().st_size == len(data):
                return cid
        except FileNotFoundError:
            pass
        write_bytes_atomically(path, data)
        log.debug("stored %s (%d bytes)", cid, len(data))
        return cid

    def get(self, cid: str, max_size: int) -> bytes:
        path = self._path(cid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(cid) from None
        if size > max_size:
            raise BlobTooLarge(f"{cid} is {size} bytes, the cap is {max_size}")
        try:
            data = _read_capped(path, max_size + 1)
        except FileNotFoundError:
            raise BlobNotFound(cid) from None
        if len(data) > max_size:
            raise BlobTooLarge(f"{cid} grew past the cap of {max_size} bytes while read")
        return verified_blob(cid, data)

    def has(self, cid: str) -> bool:
        try:
            return self._path(cid).is_file()
        except BlobNotFound:
            return False

    def pin(self, cid: str) -> None:
        if not self.has(cid):
            raise BlobNotFound(cid)

    def cids(self) -> list[str]:
        """Every CID stored here, sorted (a crash's stray temp files are not blobs)."""
        return sorted(
            path.name
            for path in self.root.glob("*/*")
            if not path.name.startswith(".") and path.is_file()
        )


# --- IpfsStore -------------------------------------------------------------------------

_RETRIED = (httpx.NetworkError, httpx.ConnectTimeout)
"""Failures to reach the node (connect, read, write, close); never a timeout of an answer."""


class IpfsStore:
    """The same store over a Kubo node's HTTP RPC API (`/api/v0`).

    Every call has a timeout; reaching the node is retried with exponential backoff
    (`backoff`, 2x, 4x... seconds) and then raises StoreUnavailable. A read that times out
    raises BlobNotFound: a node asked for a CID it lacks may search the network forever.
    """

    def __init__(
        self,
        api_url: str,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        *,
        backoff: float = 0.5,
        has_timeout: float = 2.0,
    ) -> None:
        self.retries = max(0, retries)
        self.backoff = backoff
        self.has_timeout = has_timeout
        self._client = httpx.Client(
            base_url=api_url.rstrip("/") + "/api/v0",
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send, retrying only failures to reach the node; a non-200 answer raises."""
        for attempt in range(self.retries + 1):
            try:
                response = self._client.send(request, stream=stream)
                break
            except _RETRIED as e:
                if attempt == self.retries:
                    raise StoreUnavailable(
                        f"{request.url.path}: {type(e).__name__} after {attempt + 1} tries"
                    ) from e
                delay = self.backoff * 2**attempt
                log.warning("%s: %s, retrying in %.2fs", request.url.path, e, delay)
                time.sleep(delay)
            except httpx.TimeoutException:
                raise  # the caller knows what a late answer means for its call
            except httpx.TransportError as e:
                raise StoreUnavailable(f"{request.url.path}: {type(e).__name__}: {e}") from e
        if response.status_code != 200:
            try:
                body = _head(response, 4096)
            finally:
                response.close()
            raise _error_for(request, response.status_code, body)
        return response

    def _request(
        self,
        endpoint: str,
        params: dict[str, str | int],
        *,
        data: bytes | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        files = {"file": ("blob", data, "application/octet-stream")} if data is not None else None
        request = self._client.build_request(
            "POST",
            endpoint,
            params=params,
            files=files,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
        return self._send(request)

    def put(self, data: bytes) -> str:
        expected = cid_of(data)
        params: dict[str, str | int] = {
            "cid-version": 1,
            "raw-leaves": "true",
            "chunker": f"size-{CHUNK_SIZE}",
            "pin": "true",
        }
        try:
            response = self._request("/add", params, data=data)
        except httpx.TimeoutException as e:
            raise StoreUnavailable(f"add of {len(data)} bytes timed out") from e
        lines = [line for line in response.text.splitlines() if line.strip()]
        try:
            returned = json.loads(lines[-1])["Hash"]
        except (IndexError, ValueError, KeyError, TypeError) as e:
            raise StorageError(f"unreadable answer to add: {response.text[:200]!r}") from e
        if not isinstance(returned, str) or cid_binary(returned) != cid_binary(expected):
            raise IntegrityError(
                f"the node named {len(data)} bytes {returned}, expected {expected}: "
                "it is not adding with CIDv1, raw leaves, 256 KiB chunks and a balanced layout"
            )
        log.debug("added %s (%d bytes)", expected, len(data))
        return expected

    def get(self, cid: str, max_size: int) -> bytes:
        check_cid(cid)
        params: dict[str, str | int] = {"arg": cid, "length": max_size + 1}
        request = self._client.build_request("POST", "/cat", params=params)
        received = bytearray()
        try:
            response = self._send(request, stream=True)
            try:
                for chunk in response.iter_bytes():
                    received += chunk
                    if len(received) > max_size:
                        raise BlobTooLarge(f"{cid} is larger than the cap of {max_size} bytes")
            finally:
                response.close()
        except httpx.TimeoutException as e:
            raise BlobNotFound(f"{cid}: the node did not deliver it in time") from e
        except httpx.TransportError as e:  # the connection broke while streaming
            raise StoreUnavailable(f"cat {cid}: {type(e).__name__}: {e}") from e
        return verified_blob(cid, bytes(received))

    def has(self, cid: str) -> bool:
        try:
            check_cid(cid)
            params: dict[str, str | int] = {"arg": cid, "offline": "true"}
            self._request("/block/stat", params, timeout=self.has_timeout).close()
        except (BlobNotFound, httpx.TimeoutException):
            return False
        return True

    def pin(self, cid: str) -> None:
        check_cid(cid)
        try:
            self._request("/pin/add", {"arg": cid}).close()
        except httpx.TimeoutException as e:
            raise BlobNotFound(f"{cid}: the node did not find it in time to pin") from e


def _head(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of a body, without pulling the rest of it."""
    head = bytearray()
    try:
        for chunk in response.iter_bytes():
            head += chunk
            if len(head) >= limit:
                break
    except httpx.HTTPError:
        pass
    return bytes(head[:limit])


def _error_for(request: httpx.Request, status: int, body: bytes) -> StorageError:
    """Kubo answers errors as 500 with {"Message": ..., "Type": "error"}."""
    try:
        message = str(json.loads(body)["Message"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    what = f"{request.url.path} -> {status}: {message}"
    if status == 500 and any(m in message.lower() for m in ("not found", "could not find")):
        return BlobNotFound(what)
    return StorageError(what)

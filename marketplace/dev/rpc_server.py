"""The embedded chain's JSON-RPC 2.0 server over HTTP: eth-tester in-process behind the methods
web3 and anvil's clients call (`eth_*`, and anvil's clock and snapshot methods), so several
processes can share one chain (`marketplace.dev.devnet` starts it and deploys on it)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_tester import EthereumTester
from eth_tester import exceptions as tester_errors
from web3 import Web3
from web3.types import RPCEndpoint

from marketplace.dev.devchain import DevProvider, IndexedBackend

log = logging.getLogger(__name__)

MAX_BODY = 32 * 1024 * 1024


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RpcServer:
    """JSON-RPC 2.0 over HTTP in front of an in-process eth-tester, one request at a time.

    Serves what `DevProvider` serves (eth_*, net_*, web3_*; reverts as code 3 with their data)
    and anvil's clock and snapshot methods: `evm_increaseTime`, `evm_setNextBlockTimestamp`,
    `evm_mine`, `evm_snapshot`, `evm_revert`.
    """

    def __init__(
        self, provider: DevProvider | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.provider = provider or DevProvider(EthereumTester(IndexedBackend()))
        self._tester: Any = self.provider.ethereum_tester
        w3 = Web3(self.provider, middleware=[])  # the tester's own formatters, nothing else
        self._request = self.provider.request_func(w3, w3.middleware_onion)
        self._lock = threading.Lock()  # eth-tester is not thread-safe
        self._offset = 0  # seconds added by evm_increaseTime, as anvil reports it
        self._target: tuple[int, int] | None = None  # (latest block, time set for the next)
        self._snapshots: list[int] = []
        self._evm: dict[str, Callable[[list[Any]], Any]] = {
            "evm_increaseTime": lambda p: self._increase_time(_quantity(p, 0)),
            "evm_setNextBlockTimestamp": lambda p: self._set_next(_quantity(p, 0)),
            "evm_mine": self._mine,
            "evm_snapshot": lambda p: self._snapshot(),
            "evm_revert": lambda p: self._revert(_quantity(p, 0)),
        }
        self._httpd = _HttpServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"rpc {self.url}", daemon=True
        )
        self._thread.start()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off requests while this process uses `provider` directly (eth-tester is not
        thread-safe): a test drives the chain in-process while programs follow it over HTTP."""
        with self._lock:
            yield

    def stop(self) -> None:
        """Stop serving and close every open connection (keep-alive ones included)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._httpd.close_connections()

    def handle(self, body: bytes) -> bytes | None:
        """The reply to one HTTP body (a request or a batch); None when only notifications."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _dump(_error(None, -32700, f"parse error: {exc}"))
        if isinstance(request, list):
            if not request:
                return _dump(_error(None, -32600, "invalid request: empty batch"))
            replies = [r for r in map(self._answer, request) if r is not None]
            return _dump(replies) if replies else None
        reply = self._answer(request)
        return None if reply is None else _dump(reply)

    def _answer(self, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "invalid request")
        request_id = request.get("id")
        params = request.get("params", [])
        try:
            if not isinstance(params, list):
                raise RpcError(-32602, "params must be an array")
            with self._lock:
                result = self._dispatch(request["method"], params)
        except RpcError as exc:
            result = exc
        except Exception as exc:  # the server outlives every request
            if type(exc).__module__ == tester_errors.__name__:  # refused: bad nonce, no gas ...
                result = RpcError(-32000, f"{type(exc).__name__}: {exc}")
            else:
                log.exception("%s failed", request["method"])
                result = RpcError(-32603, f"internal error: {type(exc).__name__}: {exc}")
        if "id" not in request:
            return None  # a notification
        if isinstance(result, RpcError):
            return _error(request_id, result.code, result.message)
        if isinstance(result, dict) and "error" in result:
            return {"jsonrpc": "2.0", "id": request_id, "error": result["error"]}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        if method in self._evm:
            return self._evm[method](params)
        if method.partition("_")[0] not in ("eth", "net", "web3"):
            raise RpcError(-32601, f"the method {method} does not exist/is not available")
        try:
            response = self._request(RPCEndpoint(method), params)
        except NotImplementedError:
            raise RpcError(-32601, f"the method {method} is not implemented") from None
        if "error" in response:
            return {"error": response["error"]}
        return _jsonable(response["result"])

    # -------------------------------------------------------------- the clock and snapshots

    def _latest(self) -> tuple[int, int]:
        block = self._tester.get_block_by_number("latest")
        return int(block["number"]), int(block["timestamp"])

    def _increase_time(self, seconds: int) -> int:
        """Move the next block `seconds` later than the chain's time (the latest block, or a
        time set since it); the pending block is never moved earlier."""
        number, latest = self._latest()
        base = self._target[1] if self._target and self._target[0] == number else latest
        self._offset += seconds
        self._target = (number, base + seconds)
        self._set_pending(max(self._pending_time(), base + seconds))
        return self._offset

    def _set_next(self, timestamp: int) -> None:
        number, latest = self._latest()
        if timestamp <= latest:
            raise RpcError(-32602, f"timestamp {timestamp} is not after the latest block's")
        self._target = (number, timestamp)
        self._set_pending(timestamp)

    def _mine(self, params: list[Any]) -> str:
        if params and params[0] is not None:
            self._set_next(_quantity(params, 0))
        self._tester.mine_blocks(1)
        self._target = None
        return "0x0"

    def _pending_time(self) -> int:
        return int(self._tester.get_block_by_number("pending")["timestamp"])

    def _set_pending(self, timestamp: int) -> None:
        # What eth-tester's time_travel does before it mines; here the block stays pending, so
        # transactions sent before evm_mine run at the new time too (as on anvil).
        chain = self._tester.backend.chain
        chain.header = chain.header.copy(timestamp=timestamp)

    def _snapshot(self) -> str:
        snapshot_id = int(self._tester.take_snapshot())
        self._snapshots.append(snapshot_id)
        return hex(snapshot_id)

    def _revert(self, snapshot_id: int) -> bool:
        """Revert to a snapshot, which is then used up with every later one (as on anvil)."""
        if snapshot_id not in self._snapshots:
            return False
        self._tester.revert_to_snapshot(snapshot_id)
        del self._snapshots[self._snapshots.index(snapshot_id) :]
        self._target = None
        return True


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], rpc: RpcServer) -> None:
        self.rpc = rpc
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as web3's session expects
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    disable_nagle_algorithm = True  # else each reply waits out the client's delayed ACK (40 ms)
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413, f"requests are limited to {MAX_BODY} bytes")
            return
        reply = self.server.rpc.handle(self.rfile.read(length))
        self.send_response(200 if reply is not None else 204)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply or b"")))
        self.end_headers()
        self.wfile.write(reply or b"")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _quantity(params: list[Any], index: int) -> int:
    """An integer parameter, given as a JSON number or a hex (or decimal) string."""
    try:
        value = params[index]
        return int(value, 0) if isinstance(value, str) else int(value)
    except (IndexError, TypeError, ValueError):
        raise RpcError(-32602, f"parameter {index} must be an integer") from None


def _jsonable(value: Any, key: str = "") -> Any:
    """eth-tester's results as JSON-RPC writes them: quantities and bytes as 0x hex."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return f"0x{value:0512x}" if key == "logsBloom" else hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _jsonable(v, k) for k, v in value.items()}
    return [_jsonable(v) for v in value]


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _dump(reply: Any) -> bytes:
    return json.dumps(reply).encode()

"""The real engines, run in the background: anvil (an Ethereum JSON-RPC node) and an IPFS node
serving Kubo's RPC API (Kubo's `ipfs` when it is on the PATH, else js-ipfs from npm).

Both bind to 127.0.0.1 only; the IPFS node runs offline, with no swarm, bootstrap or discovery.
Their data, logs and PID files live in one folder (`.engines/` of the project by default).
A PID file records the process's start time too, so `stop` ends exactly the processes `start`
began, never another that was given the same PID later.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError
from web3 import Web3

from marketplace.dev.compiler import PROJECT_ROOT
from marketplace.dev.devnet import anvil_command, anvil_keys, deploy_market, deployment_record
from marketplace.errors import ConfigError
from marketplace.rules.messages import Frozen
from marketplace.runtime.devnet_info import DEVNET_FILE, DevnetInfo, write_devnet_info
from marketplace.storage.files import write_atomically

ENGINES_DIR = PROJECT_ROOT / ".engines"
JSIPFS = PROJECT_ROOT / "node_modules" / ".bin" / "jsipfs"
HOST = "127.0.0.1"
ANVIL_PORT = 8545
IPFS_PORT = 5002
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class ProcessRecord(Frozen):
    """What a PID file holds."""

    pid: int
    started: int  # the process's start time, in clock ticks after boot (/proc/PID/stat)
    url: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class EngineStatus:
    name: str
    running: bool
    answering: bool
    pid: int | None
    url: str

    def describe(self) -> str:
        if not self.running:
            return f"{self.name}: stopped"
        health = "answering" if self.answering else "NOT answering"
        return f"{self.name}: running (pid {self.pid}) at {self.url}, {health}"


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot); None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class Service(ABC):
    """One engine: how to prepare its data, the command that serves it, how to see it answer."""

    name: str

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}.log"

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def answering(self, url: str) -> bool: ...

    def prepare(self) -> None:  # noqa: B027 (a hook: anvil needs nothing prepared)
        """Make the data folder ready (called only when the engine is not running)."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def record(self) -> ProcessRecord | None:
        """The running process this engine's PID file names; None if there is none."""
        try:
            record = ProcessRecord.model_validate_json(self.pid_file.read_bytes())
        except (OSError, ValidationError):
            return None
        return record if start_ticks(record.pid) == record.started else None

    def start(self) -> ProcessRecord:
        """Start the engine unless it runs already; returns once it answers."""
        running = self.record()
        if running is not None:
            return running
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prepare()
        command = self.command()
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # a Ctrl-C in the shell that started it does not stop it
            )
        ticks = start_ticks(process.pid)
        record = ProcessRecord(
            pid=process.pid, started=ticks or 0, url=self.url, command=tuple(command)
        )
        write_atomically(self.pid_file, record.model_dump_json())
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answering(self.url):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(
                    f"{self.name} did not start ({self._why(process)}); "
                    f"its log {self.log_file} ends:\n{_tail(self.log_file)}"
                )
            time.sleep(0.05)
        return record

    def _why(self, process: subprocess.Popen[bytes]) -> str:
        code = process.poll()
        if code is None:
            return f"no answer at {self.url} within {START_TIMEOUT:.0f} s"
        return f"exit code {code}; is port {self.port} in use?"

    def stop(self) -> bool:
        """End the recorded process (SIGTERM, then SIGKILL after STOP_TIMEOUT s); whether one
        was running. Only that process: a PID now used by another program is left alone."""
        record = self.record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while start_ticks(record.pid) == record.started:
            if time.monotonic() > deadline:
                os.kill(record.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the recorded process, leaving its PID file (a crash, for the tests)."""
        record = self.record()
        if record is not None:
            os.kill(record.pid, signal.SIGKILL)
            while start_ticks(record.pid) == record.started:
                time.sleep(0.02)

    def status(self) -> EngineStatus:
        record = self.record()
        return EngineStatus(
            self.name,
            running=record is not None,
            answering=record is not None and self.answering(record.url),
            pid=None if record is None else record.pid,
            url=self.url if record is None else record.url,
        )


class Anvil(Service):
    """anvil with its chain in `state.json` of its folder (saved every second and on exit)."""

    name = "anvil"

    @property
    def state_file(self) -> Path:
        return self.folder / "anvil-state.json"

    def command(self) -> list[str]:
        return anvil_command(HOST, self.port, self.state_file)

    def answering(self, url: str) -> bool:
        try:
            reply = httpx.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                timeout=1.0,
            )
            return reply.status_code == 200 and "result" in reply.json()
        except (httpx.HTTPError, ValueError):
            return False


class Ipfs(Service):
    """An offline IPFS node whose RPC API listens on 127.0.0.1 only, its repo in `ipfs/`."""

    name = "ipfs"

    def __init__(self, folder: Path, port: int, binary: str | None = None) -> None:
        super().__init__(folder, port)
        self.binary = binary or ipfs_binary()

    @property
    def repo(self) -> Path:
        return self.folder / "ipfs"

    @property
    def is_kubo(self) -> bool:
        return Path(self.binary).name == "ipfs"

    def environment(self) -> dict[str, str]:
        return {**os.environ, "IPFS_PATH": str(self.repo)}

    def command(self) -> list[str]:
        return [self.binary, "daemon", "--offline"]

    def prepare(self) -> None:
        if not (self.repo / "config").exists():
            subprocess.run(
                [self.binary, "init", "--empty-repo"],
                env=self.environment(),
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT,
            )
        config_file = self.repo / "config"
        config = json.loads(config_file.read_text())
        write_atomically(config_file, json.dumps(self.isolated(config), indent=2))
        # A node that was killed leaves its lock and API file; nothing else uses this repo.
        lock = self.repo / "repo.lock"
        if lock.is_dir():
            shutil.rmtree(lock)
        lock.unlink(missing_ok=True)
        (self.repo / "api").unlink(missing_ok=True)

    def isolated(self, config: dict[str, object]) -> dict[str, object]:
        """The node's config with the RPC API on this port of 127.0.0.1 and nothing else
        reachable: no gateway, swarm, bootstrap peers, delegates, MDNS or WebRTC discovery."""
        addresses = dict(_section(config, "Addresses"))
        addresses.update(
            API=f"/ip4/{HOST}/tcp/{self.port}",
            Swarm=[],
            Announce=[],
            Gateway=[] if self.is_kubo else "",
        )
        discovery = dict(_section(config, "Discovery"))
        discovery["MDNS"] = {**_section(discovery, "MDNS"), "Enabled": False}
        if self.is_kubo:
            extra: dict[str, object] = {"Routing": {"Type": "none"}}
        else:
            addresses.update(Delegates=[], RPC="")
            discovery["webRTCStar"] = {"Enabled": False}
            extra = {"Pubsub": {**_section(config, "Pubsub"), "Enabled": False}}
        return {**config, "Addresses": addresses, "Bootstrap": [], "Discovery": discovery, **extra}

    def answering(self, url: str) -> bool:
        try:
            return httpx.post(f"{url}/api/v0/version", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


def ipfs_binary() -> str:
    """Kubo's `ipfs` if it is on the PATH, else the project's js-ipfs."""
    kubo = shutil.which("ipfs")
    if kubo is not None:
        return kubo
    if not JSIPFS.exists():
        raise ConfigError(f"no IPFS node: neither Kubo's `ipfs` on the PATH nor {JSIPFS}")
    return str(JSIPFS)


@dataclass
class Engines:
    """anvil and an IPFS node together, and the marketplace deployed on that anvil."""

    folder: Path = ENGINES_DIR
    anvil_port: int = ANVIL_PORT
    ipfs_port: int = IPFS_PORT

    def __post_init__(self) -> None:
        self.anvil = Anvil(self.folder, self.anvil_port)
        self._ipfs: Ipfs | None = None

    @property
    def ipfs(self) -> Ipfs:
        if self._ipfs is None:  # resolved late: `status` and `stop` need no binary
            self._ipfs = Ipfs(self.folder, self.ipfs_port, binary=_recorded_binary(self.folder))
        return self._ipfs

    def start(self, data_dir: Path) -> DevnetInfo:
        """Start both (those not running), deploy the marketplace unless the chain's state
        holds it already, and write `data_dir/devnet.json` so every program uses them."""
        anvil = self.anvil.start()
        self.ipfs.start()
        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        info = deploy_market(
            w3,
            anvil.url,
            "anvil",
            anvil_keys(),
            pid=anvil.pid,
            ipfs_url=self.ipfs.url,
            record=deployment_record(self.anvil.state_file),
        )
        write_devnet_info(data_dir / DEVNET_FILE, info)
        return info

    def stop(self) -> list[tuple[str, bool]]:
        """Stop both; (name, whether it was running) for each."""
        return [(service.name, service.stop()) for service in (self.ipfs, self.anvil)]

    def status(self) -> list[EngineStatus]:
        return [self.anvil.status(), self.ipfs.status()]


def _recorded_binary(folder: Path) -> str | None:
    """The IPFS binary a running node was started with, so `stop` finds it without a lookup."""
    try:
        record = ProcessRecord.model_validate_json((folder / "ipfs.pid").read_bytes())
    except (OSError, ValidationError):
        return None
    return record.command[0] if record.command else None


def _section(config: dict[str, object], key: str) -> dict[str, object]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

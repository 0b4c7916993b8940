"""The command lines' shared machinery: connection options declared once (`option_groups`),
and programs that start without the devnet extra (eth-tester, py-evm, solc, scikit-learn,
matplotlib), whose commands then say which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from marketplace.cli.app import app as marketplace_app
from marketplace.cli.common import READING, ConnectionOptions, option_groups
from marketplace.dev.engines import ANVIL_PORT, IPFS_PORT

ROOT = Path(__file__).resolve().parent.parent
EXTRA_MODULES = ("eth_tester", "eth", "solcx", "sklearn", "matplotlib")
runner = CliRunner()


def python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def probe_app() -> tuple[typer.Typer, list[ConnectionOptions]]:
    """A command that reads the chain (READING), and what it was handed."""
    seen: list[ConnectionOptions] = []
    app = typer.Typer()

    @app.command()
    @option_groups(cli=READING)
    def look(task: int, *, cli: ConnectionOptions) -> None:
        seen.append(cli)

    @app.command()
    def other() -> None:  # two commands: `look` stays a subcommand
        pass

    return app, seen


def test_connection_options_come_after_the_subcommand_as_one_object() -> None:
    app, seen = probe_app()

    result = runner.invoke(app, ["look", "7", "--rpc", "http://node:8545", "--data-dir", "d"])

    assert result.exit_code == 0, result.output
    assert seen == [ConnectionOptions(data_dir=Path("d"), rpc="http://node:8545")]
    assert seen[0].settings.rpc_url == "http://node:8545"
    assert seen[0].settings.devnet_file == Path("d/devnet.json")


def test_a_reading_command_offers_no_signing_options() -> None:
    app, seen = probe_app()

    result = runner.invoke(app, ["look", "7", "--account", "1"])

    assert result.exit_code == 2
    assert "No such option: --account" in result.output
    assert seen == []


def test_only_typed_signing_options_name_a_signer_not_the_environment() -> None:
    typed = ConnectionOptions(account=1)
    from_env = ConnectionOptions()

    assert typed.names_signer
    os.environ["GM_ACCOUNT"] = "3"
    try:
        assert not from_env.names_signer
        assert from_env.settings.account == 3
    finally:
        del os.environ["GM_ACCOUNT"]


def test_an_unknown_option_group_or_field_is_refused_at_definition() -> None:
    def command(*, cli: ConnectionOptions) -> None:
        pass

    with pytest.raises(TypeError, match=r"command has no option group \['connection'\]"):
        option_groups(connection=READING)(command)
    with pytest.raises(TypeError, match=r"ConnectionOptions has no field \['gas'\]"):
        option_groups(cli=("data_dir", "gas"))(command)


def test_every_command_lists_the_connection_options_it_takes() -> None:
    group = get_command(marketplace_app)
    assert isinstance(group, TyperGroup)
    options = {
        name: {param.name for param in command.params} for name, command in group.commands.items()
    }
    everything = {"data_dir", "rpc", "contract", "ipfs", "account", "keystore"}
    assert everything <= options["evaluate"]
    assert everything <= options["verify"]
    assert options["index"] & everything == set(READING)
    assert options["devnet"] & everything == {"data_dir", "ipfs"}
    assert options["key"] & everything == {"data_dir", "account", "keystore"}


def test_engines_start_defaults_are_the_engines_ports() -> None:
    group = get_command(marketplace_app)
    assert isinstance(group, TyperGroup)
    engines = group.commands["engines"]
    assert isinstance(engines, TyperGroup)
    defaults = {param.name: param.default for param in engines.commands["start"].params}

    assert (defaults["anvil_port"], defaults["ipfs_port"]) == (ANVIL_PORT, IPFS_PORT)


def test_the_programs_start_without_the_devnet_extra() -> None:
    code = (
        "import sys\n"
        "import marketplace.cli.app, sponsor_cli.app, miner.cli\n"
        f"print(sorted(m for m in {EXTRA_MODULES!r} + ('marketplace.dev',) if m in sys.modules))"
    )

    result = python(code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "missing"),
    [(["devnet"], "eth_tester"), (["engines", "status"], "eth_tester"), (["devnet"], "eth")],
)
def test_a_dev_command_without_the_extra_names_it_in_one_line(
    tmp_path: Path, command: list[str], missing: str
) -> None:
    argv = ["marketplace", *command]
    if command == ["devnet"]:
        argv += ["--data-dir", str(tmp_path)]
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # as if the devnet extra were not installed\n"
        "from marketplace.cli.app import main\n"
        f"sys.argv = {argv!r}\n"
        "main()"
    )

    result = python(code)

    assert result.returncode == 1
    name = " ".join(command)
    assert result.stderr == (
        f"error: `marketplace {name}` needs the devnet extra ({missing} is missing): "
        "pip install 'gradient-marketplace[devnet]'\n"
    )

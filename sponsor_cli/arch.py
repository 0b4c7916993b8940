"""`sponsor arch propose`: a data scientist proposes an architecture (a spec and its weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marketplace.cli.common import ConnectionOptions, console, option_groups, readable_errors
from marketplace.errors import ConfigError
from marketplace.protocol.tasks import read_spec
from marketplace.rules.layers import MAX_SPEC_BYTES
from marketplace.rules.models import ModelSpec
from marketplace.storage.files import read_file

app = typer.Typer(help="Propose architectures (data scientists).", no_args_is_help=True)


@app.command()
@readable_errors
@option_groups()
def propose(
    task: Annotated[int, typer.Option("--task", help="The task id.", min=1)],
    spec: Annotated[Path, typer.Option(help="A ModelSpec JSON file (layers from the allow-list).")],
    seed: Annotated[
        int | None, typer.Option(help="Draw the initial weights from this seed.")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Initial weights as a .safetensors file (never pickle).")
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Propose an architecture for task TASK: a declarative spec plus initial weights, public
    to every miner. It earns the expertise share if the winning model descends from it.

        sponsor arch propose --task 1 --spec mlp.json --seed 1 --account 2
    """
    from marketplace.roles.sponsor import propose_architecture
    from marketplace.rules.models import init_weights
    from marketplace.wire.codec import decode_weights

    if (seed is None) == (weights is None):
        raise ConfigError("give exactly one of --seed N or --weights FILE.safetensors")
    model = ModelSpec.from_json(read_file(spec, MAX_SPEC_BYTES))
    connection = cli.signer()
    cap = read_spec(connection.chain, connection.store, task).max_blob_bytes
    if weights is not None:
        initial = decode_weights(read_file(weights, cap), model, cap)
    else:
        assert seed is not None
        if not 0 <= seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2**63), not {seed}")
        initial = init_weights(model, seed)
    result = propose_architecture(connection, task, model, initial)
    console.print(f"proposed architecture node [bold]{result.value}[/] ({result.gas_used:,} gas)")
    console.print(
        f"  next: miners train it; it earns the expertise share if the winner descends from "
        f"it (watch: sponsor task show {task})",
        soft_wrap=True,
    )

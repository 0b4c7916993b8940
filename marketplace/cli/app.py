"""`marketplace`: the evaluator's and the operator's command line (the wiring: each command
lives with its kind, in `dev_commands`, `evaluator_commands` and `service_commands`).

marketplace devnet                          # a local chain for several processes
marketplace engines start                   # anvil + an IPFS node in the background
marketplace deploy --rpc URL --keystore K   # the marketplace on any other chain
marketplace blobs push                      # the local store's blobs into IPFS
marketplace key --account 1                 # the X25519 key sponsors seal to
marketplace evaluate --task 1 --account 1   # merges every round, then the payouts
marketplace verify --task 1                 # anyone: does the posted root hold?
marketplace index                           # follow the chain's events into SQLite
marketplace serve                           # the REST API over that index
"""

from __future__ import annotations

import typer

from marketplace.cli import dev_commands, evaluator_commands, service_commands

app = typer.Typer(
    help="Evaluate and verify tasks of the gradient marketplace; run a local chain.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(dev_commands.devnet)
app.add_typer(dev_commands.engines_app, name="engines")
app.command()(dev_commands.deploy)
app.add_typer(service_commands.blobs_app, name="blobs")
app.command()(evaluator_commands.key)
app.command()(evaluator_commands.evaluate)
app.command()(evaluator_commands.verify)
app.command()(service_commands.index)
app.command()(service_commands.serve)


def main() -> None:
    app()


__all__ = ["app", "main"]

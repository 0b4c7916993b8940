"""`sponsor model ...`: get the model a task delivered, then use it offline from its directory.

sponsor model pull --task 1 -o model/ --test test.csv --account 0
sponsor model predict --model DIR --data new.csv -o predictions.csv
sponsor model export --model DIR --format onnx --check-data val.csv
"""

from __future__ import annotations

import csv
import io
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from marketplace.cli.common import ConnectionOptions, console, option_groups, readable_errors
from marketplace.delivered.modeldir import read_model
from marketplace.errors import ConfigError, ExportError
from marketplace.storage.files import read_file

if TYPE_CHECKING:
    from marketplace.delivered.inference import OnnxCheck, Prediction

app = typer.Typer(help="Use the delivered model: predict, export.", no_args_is_help=True)

PROGRESS_ROWS = 10_000  # a progress bar from this many rows up
SHOWN_ROWS = 10  # rows printed without -o

ModelDir = Annotated[
    Path, typer.Option("--model", help="The model directory `sponsor model pull` wrote.")
]


class Format(StrEnum):
    ONNX = "onnx"


MAX_TEST_BYTES = 1024 * 1024 * 1024


@app.command()
@readable_errors
@option_groups()
def pull(
    task_id: Annotated[int, typer.Option("--task", help="The task id.", min=1)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The directory to write.")],
    test: Annotated[
        Path | None,
        typer.Option(help="Your own test file (task's schema): its score goes in the card."),
    ] = None,
    *,
    cli: ConnectionOptions,
) -> None:
    """Get the model your task paid for, once its payout root is agreed: open the winner the
    evaluators sealed to you, check it is the scored one (digest and validation score), and
    write model.safetensors, model.json and its card (MODEL_CARD.md, model_card.json).

        sponsor model pull --task 1 -o model/ --account 0
    """
    from marketplace.delivered.card_markdown import describe_score
    from marketplace.delivered.modeldir import write_model
    from marketplace.roles.sponsor import pull_model

    connection = cli.signer()
    test_file = read_file(test, MAX_TEST_BYTES) if test is not None else None
    pulled = pull_model(connection, task_id, test_file)
    card_path = write_model(output, pulled)
    card = pulled.card
    console.print(
        f"pulled node {card.model.winner} ({card.model.kind}) of task {task_id} into {output}/"
    )
    for name, score in (("validation", card.validation), ("test", card.test)):
        if score is not None:
            console.print(f"  {name}: {describe_score(card.metric, score.score, score.rows)}")
    console.print(f"  weights sha256 {card.model.weights_sha256}, as scored")
    console.print(f"  model card: {card_path}")
    console.print(f"  next: sponsor model predict --model {output} --data FILE")


@app.command()
@readable_errors
def predict(
    model: ModelDir,
    data: Annotated[
        Path, typer.Option(help="A CSV or .npz with the task's columns; the label is optional.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write every prediction to this CSV.")
    ] = None,
) -> None:
    """Predict every row of a data file with the delivered model; with labels, score it as the
    evaluators did. Example:

        sponsor model predict --model model/ --data new.csv -o predictions.csv
    """
    from marketplace.delivered import inference

    files = read_model(model)
    rows = inference.load_data(data, files.card)
    with _progress(len(rows)) as progress:
        bar = progress.add_task("predicting", total=len(rows))
        result = inference.predict_file(
            files, rows, lambda done: progress.update(bar, completed=done)
        )
    card = files.card
    console.print(
        f"predicted {len(rows):,} rows of {data.name} with task {card.task_id}'s model "
        f"(node {card.model.winner}, {card.metric})"
    )
    console.print(f"  {result.describe()}")
    if output is None:
        console.print(_head(result))
        hint = f"  all of them: sponsor model predict --model {model} --data {data} -o FILE"
        console.print(hint, soft_wrap=True)
        return
    _write(output, _csv(result))
    console.print(f"  wrote {output} (row, prediction; rows numbered from 1)")
    hint = f"  to run it elsewhere: sponsor model export --model {model} --format onnx"
    console.print(hint, soft_wrap=True)


@app.command()
@readable_errors
def export(
    model: ModelDir,
    fmt: Annotated[Format, typer.Option("--format", help="The format (onnx).")] = Format.ONNX,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file (default: DIR/model.onnx).")
    ] = None,
    check_data: Annotated[
        Path | None,
        typer.Option(help="Check the graph against torch on this file (e.g. the validation set)."),
    ] = None,
) -> None:
    """Export the delivered model to ONNX, check that the graph predicts what torch predicts,
    and write it only then. Without --check-data, 256 seeded random rows are the check.

        sponsor model export --model model/ --format onnx --check-data val.csv
    """
    from marketplace.delivered import inference

    files = read_model(model)
    rows = (
        inference.load_data(check_data, files.card)
        if check_data is not None
        else inference.probe_rows(files)
    )
    graph = inference.export_onnx(files)
    check = inference.check_onnx(graph, files, rows)
    where = check_data.name if check_data is not None else "random rows"
    console.print(f"checked the ONNX graph against torch on {check.rows:,} {where}")
    console.print(f"  {_verdict(check)}")
    if not check.ok:
        raise ExportError("the ONNX graph disagrees with torch: not written")
    target = output or model / "model.onnx"
    _write(target, graph)
    console.print(
        f"wrote {target} ({len(graph):,} bytes, ONNX opset {inference.ONNX_OPSET}): "
        f"input {inference.ONNX_INPUT!r} (batch, {rows.features.shape[1]}) "
        f"{files.spec.input_dtype}, output {inference.ONNX_OUTPUT!r}",
        soft_wrap=True,
    )
    if check_data is None:
        hint = f"  check it on your data: sponsor model export --model {model} --check-data FILE"
        console.print(hint, soft_wrap=True)


def _progress(rows: int) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=rows < PROGRESS_ROWS,
    )


def _verdict(check: OnnxCheck) -> str:
    line = f"max difference {check.max_difference:.3g} (tolerance {check.tolerance:.3g})"
    if check.disagreeing_rows:
        first = ", ".join(str(row) for row in check.disagreeing_rows[:5])
        return f"{line}; {len(check.disagreeing_rows):,} rows predict another class: {first}"
    return f"{line}; every row's prediction agrees" if check.ok else line


def _head(result: Prediction) -> Table:
    table = Table("row", "prediction")
    for row, value in enumerate(result.predictions[:SHOWN_ROWS].tolist(), start=1):
        table.add_row(str(row), _text(value))
    if len(result.predictions) > SHOWN_ROWS:
        table.add_row("...", f"{len(result.predictions) - SHOWN_ROWS:,} more")
    return table


def _csv(result: Prediction) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "prediction"])
    for row, value in enumerate(result.predictions.tolist(), start=1):
        writer.writerow([row, _text(value)])
    return out.getvalue().encode()


def _text(value: int | float) -> str:
    """A class index as is; a float32 value in its shortest round-trip form."""
    import numpy as np

    return str(value) if isinstance(value, int) else str(np.float32(value))


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None

"""MODEL_CARD.md: a model card (`marketplace.delivered.card.ModelCard`) rendered for people, one
fact per line, and a score in words."""

from __future__ import annotations

from marketplace.delivered.card import CardScore, ModelCard
from marketplace.rules.evaluation import SSE_SCALE
from marketplace.rules.messages import Metric


def render_markdown(card: ModelCard) -> str:
    """MODEL_CARD.md: the card for people, one fact per line, every number in full (so that
    `check_card` can hold each line to the JSON twin, and the twin to the chain)."""
    metric, data = card.metric, card.data
    kind = f"{data.num_classes} classes" if data.num_classes else "regression"
    lines = [
        f"# Model card: task {card.task_id}, {card.task_name}",
        "",
        f"The model the sponsor of task {card.task_id} paid for: node {card.model.winner} "
        f"({card.model.kind}), scored by {metric.value} on {data.num_features} "
        f"{data.input} with label column `{data.label_column}` ({kind}).",
        "",
        "## Scores",
        "",
        _score_line("validation", card.validation, metric, "the evaluators' score"),
    ]
    if card.test is not None:
        lines.append(
            _score_line("test", card.test, metric, "the sponsor's own file: not on the chain")
        )
    model = card.model
    lines += [
        "",
        "## Model",
        "",
        f"- architecture: node {model.architecture} by {model.architecture_author}",
        f"- spec sha256: {model.spec_sha256}",
        f"- weights sha256: {model.weights_sha256}",
        f"- delivered by {model.delivered_by} as {model.delivery_cid}",
        "",
        "## Lineage, from the architecture to the winner",
        "",
        "| node | kind | round | author | parents | samples | DP epsilon | score | gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in card.lineage:
        epsilon = "-" if n.epsilon is None else f"{n.epsilon:g}"
        parents = ",".join(map(str, n.parents)) or "-"
        lines.append(
            f"| {n.node_id} | {n.kind} | {n.round} | {n.author} | {parents} | {n.samples} "
            f"| {epsilon} | {n.score} | {n.gain} |"
        )
    lines += [
        "",
        "## Contributors and what each was paid (wei)",
        "",
        "| account | made | nodes | credited gain | paid | expertise | data | compute | deposits "
        "| points |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in card.contributors:
        lines.append(
            f"| {c.account} | {', '.join(c.kinds)} | {','.join(map(str, c.nodes))} | {c.gain} "
            f"| {c.amount} "
            f"| {c.expertise} | {c.data} | {c.compute} | {c.deposits} | {c.points} |"
        )
    s = card.settlement
    lines += [
        "",
        "## Settlement",
        "",
        f"- chain {s.chain_id}, contract {s.contract}",
        f"- payout root {s.payout_root}, total {s.payout_total} wei",
        f"- report {s.report_cid}, posted by {s.report_evaluator}",
        f"- created in {s.created_tx or '-'}",
        f"- validation revealed in {s.revealed_tx or '-'}",
        *(f"- root posted in {tx}" for tx in s.root_txs),
        f"- finalized in {s.finalized_tx or '- (not yet)'}",
        "",
        "Check every line against the chain: `marketplace verify --card model_card.json`.",
    ]
    return "\n".join(lines) + "\n"


def _score_line(name: str, score: CardScore, metric: Metric, whose: str) -> str:
    shown = describe_score(metric, score.score, score.rows)
    return f"- {name}: {shown}, file sha256 {score.file_sha256} ({whose})"


def describe_score(metric: Metric, score: int, rows: int) -> str:
    """'accuracy 0.9532 (1,234 of 1,295 rows)' or 'negated SSE -12.500000 (1,295 rows)'."""
    if Metric(metric) is Metric.ACCURACY:
        return f"accuracy {score / rows if rows else 0:.4f} ({score:,} of {rows:,} rows)"
    return f"negated SSE {score / SSE_SCALE:,.6f} ({rows:,} rows)"

"""Issue 14, tests and tools: the whole market run over randomly corrupted DAGs.

Each hypothesis example is one tiny task (TINY, two rounds, two honest miners training one
epoch, a 1-of-1 or a 2-of-3 evaluator set) into which a random subset of corruptions is
injected: junk or misfit architectures; updates that are junk, never uploaded, mis-digested,
sealed to nobody, non-finite or built on junk; a rogue evaluator's merges nobody confirms or
posted without their blob; a lying payout report; the sponsor revealing a CID nobody stored.
The programs (`Miner._pass`, `Evaluator.step`, claims, the sponsor's reclaim, `verify_task`)
are driven to the end, and every example must settle: no exception escapes, every corrupted
node is invalid with its reason, every honest node is valid, the honest miners claim exactly
their leaves, the escrow ends at zero, and `verify` passes the agreed report and fails the lie
with reasons.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st

from marketplace.chain.events import Claimed
from marketplace.dev.devchain import advance_to
from marketplace.protocol.reports import agreed_report
from marketplace.protocol.tasks import account_key, evaluator_keys, nodes_by_id, read_spec
from marketplace.roles.evaluator import Evaluator
from marketplace.roles.sponsor import propose_architecture
from marketplace.roles.verify import Check, Verification, verify_task
from marketplace.rules.messages import NodeKind, NodeRecord
from marketplace.rules.messages import Phase as TaskPhase
from marketplace.rules.models import ModelSpec, init_weights
from marketplace.runtime.connect import Connection
from marketplace.runtime.state import StateFile
from marketplace.wire.cid import cid_of
from marketplace.wire.codec import encode_weights
from marketplace.wire.crypto import PayoutLeaf, payout_tree, sha256
from marketplace.wire.envelope import seal
from marketplace.wire.keys import X25519KeyPair
from marketplace.wire.report import PayoutEntry, PayoutReport
from tests.helpers import spent
from tests.market import BOUNTY, DEPOSIT, SPLIT, TINY, Market, new_market
from tests.rule import BPS, capped_data, refunded_deposits
from tests.test_confirmed_merges import UNCONFIRMED_1, InflatedScore, UploadsNothing
from tests.test_hostile_inputs import MISFIT, _bogus_reveal, _claim_all, _reclaim

MISFIT_INPUT = ModelSpec(
    input_shape=[32], layers=[{"type": "linear", "in_features": 32, "out_features": 10}]
)
ARCHITECTURES = ("arch-random-bytes", "arch-empty", "arch-misfit-output", "arch-misfit-input")
UPDATES = (
    "update-random-bytes",
    "update-not-uploaded",
    "update-wrong-digest",
    "update-sealed-to-nobody",
    "update-non-finite",
    "update-on-junk-architecture",
)
MERGES = ("merge-unconfirmed", "merge-without-blob")
LIES = ("report-reordered", "report-wrong-sum")
REVEAL = "reveal-unstored-cid"
ALL_KINDS = (*ARCHITECTURES, *UPDATES, *MERGES, *LIES, REVEAL)

# What each corrupted node's verdict must say: its reason starts with one of these.
REASONS: dict[str, tuple[str, ...]] = {
    "arch-random-bytes": ("weights: not safetensors: ", "spec: "),  # b"{}" has no spec
    "arch-empty": ("weights: not safetensors: 0 bytes, too short for a header",),
    "arch-misfit-output": ("spec: the spec outputs shape (5,), the task needs (10,)",),
    "arch-misfit-input": ("spec: input_shape (32,) holds 32 values, the data has 64 per row",),
    "update-random-bytes": ("undecryptable: not an envelope: ", "undecryptable: truncated: "),
    "update-not-uploaded": ("blob-missing: bafkrei",),
    "update-wrong-digest": ("digest-mismatch: the blob's sha256 is ",),
    "update-sealed-to-nobody": ("undecryptable: not a recipient: ",),
    "update-non-finite": ("non-finite: tensor '0.bias' holds non-finite values",),
    "merge-unconfirmed": (UNCONFIRMED_1,),
    "merge-without-blob": (UNCONFIRMED_1,),
}
# Updates whose blob an evaluator's key cannot open: `verify` lists them as unreadable.
SEALED_FROM_VERIFIER = ("update-random-bytes", "update-not-uploaded", "update-sealed-to-nobody")

SEEN: Counter[str] = Counter()  # corruption kinds over the examples run, printed once

# The attacker sends several corrupted updates a round from one account, so that each is judged
# for what it is; the per-account cap that would refuse them first has its own test
# (tests/test_bounded_work.py).
CAP: dict[str, int] = {"max_submissions_per_round": 16}


@dataclass(frozen=True)
class Case:
    """One example: the evaluator set and the corruptions injected into the honest task."""

    three: bool  # 2-of-3 evaluators, one of them rogue; else 1-of-1 (honest)
    junk_first: bool  # the junk architectures are proposed before the honest one
    architectures: tuple[str, ...]
    updates: tuple[tuple[str, int], ...]  # (kind, round)
    merges: tuple[str, ...]  # the rogue's merges, every round
    lie: str | None  # the rogue's payout report
    bogus_reveal: bool
    noise: bytes  # the random bytes of junk blobs

    @property
    def kinds(self) -> list[str]:
        lie = [self.lie] if self.lie else []
        reveal = [REVEAL] if self.bogus_reveal else []
        return [*self.architectures, *(k for k, _ in self.updates), *self.merges, *lie, *reveal]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    three = draw(st.booleans())
    architectures = draw(st.lists(st.sampled_from(ARCHITECTURES), unique=True, max_size=2))
    updates = draw(
        st.lists(
            st.tuples(st.sampled_from(UPDATES), st.integers(0, 1)),
            unique_by=lambda u: u[0],
            max_size=3,
        )
    )
    if any(kind == "update-on-junk-architecture" for kind, _ in updates) and not architectures:
        architectures = ["arch-random-bytes"]
    merges = draw(st.lists(st.sampled_from(MERGES), unique=True)) if three else []
    lie = draw(st.none() | st.sampled_from(LIES)) if three else None
    return Case(
        three,
        draw(st.booleans()),
        tuple(architectures),
        tuple(updates),
        tuple(merges),
        lie,
        draw(st.booleans()),
        draw(st.binary(min_size=1, max_size=64)),
    )


# ------------------------------------------------------------------ the corruptions


def _junk_architecture(market: Market, kind: str, noise: bytes) -> int:
    proposer = market.keys[6]
    if kind in ("arch-misfit-output", "arch-misfit-input"):
        model = MISFIT if kind == "arch-misfit-output" else MISFIT_INPUT
        weights = init_weights(model, 1)
        result = propose_architecture(market.connection(proposer), market.task_id, model, weights)
    else:
        blob = noise if kind == "arch-random-bytes" else b""
        result = market.chain.propose_architecture(
            proposer.address, market.task_id, sha256(blob), market.store.put(blob)
        )
    assert result.value is not None
    return result.value


def _sealed(
    market: Market, parent: int, weights: dict[str, torch.Tensor], to: list[bytes]
) -> bytes:
    attacker = market.keys[8]
    return seal(
        encode_weights(weights),
        to,
        attacker,
        task_id=market.task_id,
        parent=parent,
        kind="update",
        chain_id=market.chain_id,
    )


def _corrupt_update(market: Market, kind: str, honest: int, junk: list[int], noise: bytes) -> int:
    """Submit the update `kind` by the attacker (account 8); its node id."""
    readers = evaluator_keys(read_spec(market.chain, market.store, market.task_id))
    weights = {name: t.detach().clone() for name, t in init_weights(TINY, 7).items()}
    parent, digest, cid = honest, b"", ""
    if kind == "update-random-bytes":
        digest, cid = sha256(noise), market.store.put(noise)
    elif kind == "update-not-uploaded":
        never = b"an update nobody stored " + noise
        digest, cid = sha256(never), cid_of(never)
        assert not market.store.has(cid)
    elif kind == "update-wrong-digest":
        digest, cid = sha256(noise), market.store.put(_sealed(market, parent, weights, readers))
    elif kind == "update-sealed-to-nobody":
        nobody = X25519KeyPair.from_private_bytes(sha256(b"nobody" + noise)).public_bytes
        blob = _sealed(market, parent, weights, [nobody])
        digest, cid = sha256(blob), market.store.put(blob)
    else:
        if kind == "update-non-finite":
            weights[sorted(weights)[0]].view(-1)[0] = float("nan")
        else:  # on the junk architecture, sealed like an honest update
            parent = junk[0]
        blob = _sealed(market, parent, weights, readers)
        digest, cid = sha256(blob), market.store.put(blob)
    submitted = market.chain.submit_update(
        market.keys[8].address, market.task_id, parent, 100, digest, cid
    )
    assert submitted.value is not None
    return submitted.value


def _lie(market: Market, rogue: Evaluator, kind: str) -> None:
    """The rogue posts first: the true root with its leaves reversed, or another root whose
    one leaf pays it more than the posted total."""
    truth = rogue.evaluate(market.task_id)
    assert len(truth.payouts) >= 2
    root, total = bytes.fromhex(truth.root[2:]), truth.total
    if kind == "report-reordered":
        lying = truth.model_copy(update={"payouts": tuple(reversed(truth.payouts))})
    else:
        leaf = PayoutLeaf(0, rogue.address, total + 1, 0)
        root = payout_tree([leaf]).root
        entry = PayoutEntry(index=0, account=rogue.address, amount=total + 1, points=0)
        lying = truth.model_copy(update={"payouts": (entry,), "root": "0x" + root.hex()})
    cid = market.store.put(lying.to_bytes())
    market.chain.post_payout_root(rogue.address, market.task_id, root, total, cid)


# ------------------------------------------------------------------ one example


@dataclass
class Outcome:
    market: Market
    honest: list[Evaluator]
    rogue: Evaluator | None
    kinds: dict[int, str]  # corrupted node -> its corruption
    junk: list[int]  # the junk architectures
    escrow: int = 0


def _setup(market: Market, case: Case) -> Outcome:
    first, second, rogue_account = market.evaluator_account, market.keys[3], market.keys[7]
    if case.three:
        market.create(rounds=2, evaluators=[first, second, rogue_account], quorum=2, **CAP)
        honest = [market.make_evaluator(first), market.make_evaluator(second)]
    else:
        market.create(rounds=2, **CAP)
        honest = [market.make_evaluator()]
    rogue = None
    if case.three:
        rogue_type = InflatedScore if "merge-unconfirmed" in case.merges else Evaluator
        store = (
            UploadsNothing(market.folder / "blobs")
            if "merge-without-blob" in case.merges
            else market.store
        )
        state = StateFile(market.folder / "state" / "rogue.json")
        rogue = rogue_type(Connection(rogue_account, market.chain, store, market.chain_id), state)
    return Outcome(market, honest, rogue, {}, [])


def _run(case: Case, folder: Path) -> Outcome:
    market = new_market(folder)
    outcome = _setup(market, case)
    honest_arch, junk = 0, outcome.junk
    if not case.junk_first:
        honest_arch = market.propose()
    for kind in case.architectures:
        junk.append(_junk_architecture(market, kind, case.noise))
        outcome.kinds[junk[-1]] = kind
    if case.junk_first:
        honest_arch = market.propose()
    market.add_miners(2, epochs=1)
    events: list[str] = []
    for round_index in range(2):
        for kind, when in case.updates:
            if when == round_index:
                node = _corrupt_update(market, kind, honest_arch, junk, case.noise)
                outcome.kinds[node] = kind
        for miner in market.miners:
            assert not miner._pass(market.task_id, events.append)
        assert len(events) == 2 * (round_index + 1), events  # each miner submitted once
        advance_to(market.w3, market.chain.task(market.task_id).round_end(round_index))
        if outcome.rogue is not None and case.merges:
            lines = outcome.rogue.step(market.task_id)
            assert lines and lines[0].startswith(f"round {round_index}: posted merge"), lines
            (merge,) = [
                r for r in _merges(market, round_index) if r.author == outcome.rogue.address
            ]
            outcome.kinds[merge.node_id] = case.merges[0]
        for evaluator in outcome.honest:
            lines = evaluator.step(market.task_id)
            assert any(line.startswith(f"round {round_index}: ") for line in lines), lines
    if case.bogus_reveal:
        _bogus_reveal(market)
    else:
        market.reveal()
    outcome.escrow = market.chain.balance(market.chain.address)
    if outcome.rogue is not None and case.lie:
        _lie(market, outcome.rogue, case.lie)
    posted = [evaluator.step(market.task_id) for evaluator in outcome.honest]
    assert posted[0][0].startswith("posted the payout root"), posted
    assert all(lines == [] or lines[0].startswith("posted the payout root") for lines in posted)
    market.finalize()
    assert market.chain.phase(market.task_id) is TaskPhase.CLAIMS
    return outcome


def _merges(market: Market, round_index: int) -> list[NodeRecord]:
    records = nodes_by_id(market.chain, market.task_id).values()
    return [r for r in records if r.kind is NodeKind.MERGE and r.round == round_index]


# ------------------------------------------------------------------ what must hold


def _check_verdicts(outcome: Outcome, report: PayoutReport) -> None:
    market = outcome.market
    nodes = {n.node_id: n for n in report.nodes}
    assert set(nodes) == set(nodes_by_id(market.chain, market.task_id))
    for node_id, kind in outcome.kinds.items():
        verdict = nodes[node_id]
        on_junk = kind == "update-on-junk-architecture"
        reasons = (
            (f"spec: architecture {outcome.junk[0]} is invalid",) if on_junk else REASONS[kind]
        )
        assert not verdict.valid and verdict.reason, verdict
        assert verdict.reason.startswith(reasons), (verdict.reason, reasons)
    honest = [n for n in report.nodes if n.node_id not in outcome.kinds]
    assert all(n.valid for n in honest), [n for n in honest if not n.valid]
    assert {n.kind for n in honest} == {NodeKind.ARCHITECTURE, NodeKind.UPDATE, NodeKind.MERGE}
    assert report.winner is not None and report.winner not in outcome.kinds
    attackers = {market.keys[6].address, market.keys[8].address, market.keys[7].address}
    assert attackers.isdisjoint(p.account for p in report.payouts)


def _check_claims(outcome: Outcome, report: PayoutReport) -> None:
    """The honest miners' leaves hold what the rule owes them (`tests/rule.py`: the data pool
    by points under the per-account cap, deposits back unless the harm clause takes them: one
    epoch on a skewed shard can score under the frontier); each claims in its own pass exactly
    its leaf, or, owed nothing, claims nothing; every other leaf is relayed; the sponsor
    reclaims the rest and the escrow ends at zero."""
    market, task_id = outcome.market, outcome.market.task_id
    records = nodes_by_id(market.chain, task_id)
    data = capped_data(report, BOUNTY * SPLIT.data_bps // BPS)
    refunds = refunded_deposits(report, records, DEPOSIT)
    assert data and set(data) <= {m.address for m in market.miners}
    events: list[str] = []
    for miner in market.miners:
        entry = report.entry_for(miner.address)
        before = market.chain.balance(miner.address)
        assert miner._pass(task_id, events.append)
        claimed = market.chain.events(Claimed, task_id=task_id, account=miner.address)
        if entry is None:
            assert (data.get(miner.address), refunds.get(miner.address)) == (None, None)
            assert claimed == [] and market.chain.balance(miner.address) == before
            continue
        assert (entry.data, entry.deposits) == (
            data.get(miner.address, 0),
            refunds.get(miner.address, 0),
        )
        assert entry.amount > 0 and [e.amount for e in claimed] == [entry.amount]
        gas = spent(market.w3, claimed[0].tx_hash)
        assert market.chain.balance(miner.address) == before + entry.amount - gas
    miners = {m.address for m in market.miners}
    rest = report.model_copy(
        update={"payouts": tuple(p for p in report.payouts if p.account not in miners)}
    )
    _claim_all(market, rest)
    assert market.chain.balance(market.chain.address) == outcome.escrow - report.total
    assert _reclaim(market) == outcome.escrow - report.total
    assert market.chain.balance(market.chain.address) == 0


def _by_report(verification: Verification) -> dict[str, list[Check]]:
    """The checks grouped by the report they follow ("" for those before the first report)."""
    groups: dict[str, list[Check]] = {"": []}
    current = ""
    for check in verification.checks:
        if check.name.endswith(" report"):
            current = check.name.removesuffix(" report")
            groups[current] = []
        groups[current].append(check)
    return groups


def _failures_of_the_lie(lie: str | None, rogue: str, truth: PayoutReport) -> dict[str, str]:
    """The checks `verify` fails for the rogue's report (`_lie`), and how their details start."""
    if lie is None:
        return {}
    if lie == "report-reordered":  # the true root, so only the report's order is wrong
        return {f"{rogue} report": f"leaf at position 0 has index {len(truth.payouts) - 1}"}
    total = truth.total
    return {
        f"{rogue} report": f"the leaves add up to {total + 1}, not the posted total {total}",
        f"{rogue} root": f"recomputed {truth.root[2:18]}... ({total}) vs posted ",
    }


def _check_verify(outcome: Outcome, case: Case, report: PayoutReport) -> None:
    """With an evaluator's key (every node re-scored) and with none: the agreed report's
    checks pass; the lie's fail with its reasons; a bogus reveal stops only the public one."""
    market = outcome.market
    account = market.evaluator_account
    keyed = verify_task(
        market.chain, market.store, market.task_id, market.chain_id, account, account_key(account)
    )
    public = verify_task(market.chain, market.store, market.task_id, market.chain_id)
    nodes = sorted(n.node_id for n in report.nodes)
    sealed = sorted(n for n, kind in outcome.kinds.items() if kind in SEALED_FROM_VERIFIER)
    assert keyed.unreadable == sealed
    assert keyed.rescored == sorted(set(nodes) - set(sealed))
    rogue = f"{market.keys[7].address[:10]}..."
    lies = _failures_of_the_lie(case.lie, rogue, report)
    if lies and "merge-without-blob" in case.merges:  # the rogue uploads nothing: its delivery
        lies[f"{rogue} delivery"] = "the delivery bafkrei"  # is missing too
    for verification in (keyed, public):
        if verification is public and case.bogus_reveal:
            (check,) = verification.checks
            assert (check.name, check.ok) == ("validation", False)
            assert check.detail.startswith("the revealed file bafkrei"), check.detail
            assert check.detail.endswith("): nothing can be recomputed"), check.detail
            continue
        groups = _by_report(verification)
        assert f"{report.evaluator[:10]}..." in groups
        assert groups[""] and all(c.ok for c in groups[""]), groups[""]
        failed = {c.name: c.detail for c in verification.checks if not c.ok}
        assert set(failed) == set(lies), failed
        assert all(failed[name].startswith(lies[name]) for name in lies), failed
        assert verification.ok == (not lies)


# Every kind at once, with each lie, so that a change to the strategy cannot drop a kind.
EVERYTHING = Case(
    three=True,
    junk_first=True,
    architectures=ARCHITECTURES,
    updates=tuple((kind, i % 2) for i, kind in enumerate(UPDATES)),
    merges=MERGES,
    lie="report-reordered",
    bogus_reveal=True,
    noise=b"\x00\xff junk",
)


@example(case=EVERYTHING)
@example(case=replace(EVERYTHING, junk_first=False, lie="report-wrong-sum", bogus_reveal=False))
@settings(
    max_examples=10,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: 10 s an example, the note names it
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def _settles_whatever_is_corrupted(case: Case) -> None:
    note(repr(case))  # hypothesis prints a composite's draw as "case=,"
    for kind in case.kinds:
        event(kind)
    SEEN.update(case.kinds)
    SEEN["examples"] += 1
    with tempfile.TemporaryDirectory() as folder:
        outcome = _run(case, Path(folder))
        report = agreed_report(outcome.market.chain, outcome.market.store, outcome.market.task_id)
        assert report.evaluator in {e.address for e in outcome.honest}
        _check_verdicts(outcome, report)
        _check_verify(outcome, case, report)
        _check_claims(outcome, report)


def test_settlement_completes_and_verify_agrees_whatever_the_dag_holds() -> None:
    SEEN.clear()
    _settles_whatever_is_corrupted()
    print(f"\ncorrupted DAGs: {dict(sorted(SEEN.items()))}")
    assert set(ALL_KINDS) <= set(SEEN), set(ALL_KINDS) - set(SEEN)

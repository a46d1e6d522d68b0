"""Selection strategies checked against their formulas on a fixed archive.

Each analytic strategy: 20k seeded draws, every node's count within 5 binomial sigmas of
N * p_i, with p_i computed here from the paper's formula (not from the strategy's code).
HGM: compared with an independent Monte-Carlo of one Beta draw per node.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from archive import (
    Archive,
    Candidates,
    Gate,
    NewNode,
    NoEligibleNodeError,
    Score,
    Status,
    register_strategy,
)
from archive.fenwick import WeightTree
from archive.index import CladeStats, SplitColumn
from archive.selection import (
    STRATEGIES,
    beta_cdf,
    median_absolute_deviation,
    median_sorted,
    sample_beta_max,
)

DRAWS = 20_000

# (id, parent, status, train score or None); children counts follow from the parents.
TREE = [
    ("r", None, "evaluated", 0.30),
    ("a", "r", "evaluated", 0.50),
    ("b", "r", "evaluated", 0.20),
    ("c", "r", "failed", None),
    ("a1", "a", "evaluated", 0.70),
    ("a2", "a", "evaluated", 0.40),
    ("a3", "a", "evaluated", 0.55),
    ("a11", "a1", "evaluated", 0.90),
    ("a12", "a1", "evaluated", 0.65),
    ("a13", "a1", "failed", None),
    ("a111", "a11", "evaluated", 0.85),
    ("b1", "b", "evaluated", 0.10),
    ("b2", "b", "evaluated", 0.25),
    ("b11", "b1", "pending", None),
    ("a21", "a2", "evaluated", 0.40),
    ("a22", "a2", "evaluating", None),
    ("d", "r", "evaluated", None),  # evaluated on dev only: not eligible on train
]


def build_tree(run_dir: Path) -> Archive:
    archive = Archive(run_dir)
    archive.add_root("m", "h", node_id="r")
    archive.record_scores("r", {"train": Score(0.30, 50)})
    specs = []
    for node_id, parent, status, score in TREE[1:]:
        scores = {"train": Score(score, 50)} if score is not None else {}
        if node_id == "d":
            scores = {"dev": Score(0.99, 50)}
        specs.append(
            NewNode(
                node_id,
                [parent],
                "es_step",
                es_record={"step": node_id},
                status=Status(status),
                failure_reason="crashed" if status == "failed" else None,
                scores=scores,
            )
        )
    archive.add_many(specs)
    return archive


@pytest.fixture
def archive(tmp_path: Path):
    archive = build_tree(tmp_path / "run")
    yield archive
    archive.close()


def eligible_table(archive: Archive) -> dict[str, tuple[float, int]]:
    """id -> (train score, children) for the default gate, read from Node objects."""
    table = {}
    for node in archive.nodes():
        if node.status is Status.EVALUATED and "train" in node.scores:
            table[node.id] = (node.scores["train"].score, node.children)
    return table


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def assert_matches(counts: Counter[str], expected: dict[str, float]) -> None:
    assert set(counts) <= set(expected), f"ineligible nodes drawn: {set(counts) - set(expected)}"
    total = sum(expected.values())
    for node_id, weight in expected.items():
        p = weight / total
        sigma = math.sqrt(DRAWS * p * (1 - p))
        assert abs(counts[node_id] - DRAWS * p) <= 5 * sigma + 1, (
            node_id,
            counts[node_id],
            DRAWS * p,
        )


def draw(
    archive: Archive, strategy: str | Callable, seed: int = 7, **params: object
) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(archive.select_parent(strategy, rng, **params) for _ in range(DRAWS))


def test_eligibility_of_fixture(archive: Archive) -> None:
    table = eligible_table(archive)
    assert set(table) == {"r", "a", "b", "a1", "a2", "a3", "a11", "a12", "a111", "b1", "b2", "a21"}
    assert table["a"] == (0.5, 3) and table["r"] == (0.3, 4)


def test_score_child_prop_matches_dgm_formula(archive: Archive) -> None:
    expected = {
        i: sigmoid(10 * (a - 0.5)) / (1 + n) for i, (a, n) in eligible_table(archive).items()
    }
    assert_matches(draw(archive, "score_child_prop"), expected)


@pytest.mark.parametrize("lam", [1.0, 10.0])
def test_weighted_matches_shinka_formula(archive: Archive, lam: float) -> None:
    table = eligible_table(archive)
    scores = [a for a, _ in table.values()]
    med = statistics.median(scores)
    mad = statistics.median([abs(a - med) for a in scores])
    assert mad > 0
    expected = {i: sigmoid(lam * (a - med) / mad) / (1 + n) for i, (a, n) in table.items()}
    assert_matches(draw(archive, "weighted", lam=lam), expected)


def test_weighted_handles_zero_mad(tmp_path: Path) -> None:
    with Archive(tmp_path / "run") as archive:
        archive.add_root(
            "m", "h", node_id="r", status=Status.EVALUATED, scores={"train": Score(0.5, 10)}
        )
        specs = [
            NewNode(f"n{i}", ["r"], status=Status.EVALUATED, scores={"train": Score(s, 10)})
            for i, s in enumerate([0.5, 0.5, 0.5, 0.9, 0.1])
        ]
        archive.add_many(specs)
        table = eligible_table(archive)
        scores = [a for a, _ in table.values()]
        med = statistics.median(scores)
        assert statistics.median([abs(a - med) for a in scores]) == 0
        scale = statistics.fmean(abs(a - med) for a in scores)  # documented fallback
        expected = {i: sigmoid(10 * (a - med) / scale) / (1 + n) for i, (a, n) in table.items()}
        assert_matches(draw(archive, "weighted"), expected)


def test_weighted_all_equal_scores_is_children_only(tmp_path: Path) -> None:
    with Archive(tmp_path / "run") as archive:
        archive.add_root(
            "m", "h", node_id="r", status=Status.EVALUATED, scores={"train": Score(0.5, 10)}
        )
        archive.add_many(
            [
                NewNode(f"n{i}", ["r"], status=Status.EVALUATED, scores={"train": Score(0.5, 10)})
                for i in range(3)
            ]
        )
        expected = {"r": 1 / 4, "n0": 1.0, "n1": 1.0, "n2": 1.0}
        assert_matches(draw(archive, "weighted"), expected)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_power_law_matches_rank_formula(archive: Archive, alpha: float) -> None:
    table = eligible_table(archive)
    order = list(table)  # insertion order = seq order, the documented tie-break
    ranked = sorted(order, key=lambda i: (-table[i][0], order.index(i)))
    expected = {node_id: (rank + 1) ** -alpha for rank, node_id in enumerate(ranked)}
    assert_matches(draw(archive, "power_law", alpha=alpha), expected)


def test_uniform_and_best(archive: Archive) -> None:
    table = eligible_table(archive)
    assert_matches(draw(archive, "uniform"), dict.fromkeys(table, 1.0))
    assert draw(archive, "best") == Counter({"a11": DRAWS})


def test_best_breaks_ties_with_the_rng(tmp_path: Path) -> None:
    with Archive(tmp_path / "run") as archive:
        archive.add_root(
            "m", "h", node_id="r", status=Status.EVALUATED, scores={"train": Score(0.9, 10)}
        )
        archive.add_many(
            [NewNode("t", ["r"], status=Status.EVALUATED, scores={"train": Score(0.9, 10)})]
        )
        assert_matches(draw(archive, "best"), {"r": 1.0, "t": 1.0})


def clade_counts_by_hand(archive: Archive) -> dict[str, tuple[int, int]]:
    """Improvement outcomes summed over strict descendants, by explicit BFS (no index code)."""
    nodes = {n.id: n for n in archive.nodes()}

    def outcome(n) -> tuple[int, int]:  # noqa: ANN001
        if not n.parent_ids:
            return (0, 0)
        if n.status is Status.FAILED:
            return (0, 1)
        if n.status is not Status.EVALUATED or "train" not in n.scores:
            return (0, 0)
        parent_scores = [
            nodes[p].scores["train"].score
            for p in n.parent_ids
            if nodes[p].status is Status.EVALUATED and "train" in nodes[p].scores
        ]
        if not parent_scores:
            return (0, 0)
        return (1, 0) if n.scores["train"].score > max(parent_scores) else (0, 1)

    counts = {}
    for node_id in nodes:
        s = f = 0
        stack, seen = list(archive.children_of(node_id)), set()
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            ds, df = outcome(nodes[d])
            s, f = s + ds, f + df
            stack.extend(archive.children_of(d))
        counts[node_id] = (s, f)
    return counts


def test_hgm_clade_counts(archive: Archive) -> None:
    counts = clade_counts_by_hand(archive)
    # a: a1 up, a2 down, a3 up, a11 up, a12 down, a13 failed, a111 down, a21 not up
    assert counts["a"] == (3, 5)
    assert counts["b"] == (1, 1)  # b1 down, b2 up, b11 pending: not counted
    stats = archive._index.clade_stats("train", "improvement")
    for node_id, expected in counts.items():
        assert stats.counts(archive._index.by_id[node_id]) == expected, node_id


def test_hgm_matches_independent_monte_carlo(archive: Archive) -> None:
    table = eligible_table(archive)
    counts = clade_counts_by_hand(archive)
    rng = random.Random(12345)
    reference: Counter[str] = Counter()
    for _ in range(DRAWS):
        thetas = {i: rng.betavariate(1 + counts[i][0], 1 + counts[i][1]) for i in table}
        reference[max(thetas, key=thetas.__getitem__)] += 1
    observed = draw(archive, "hgm")
    assert set(observed) <= set(table)
    for node_id in table:
        p = (reference[node_id] + observed[node_id]) / (2 * DRAWS)
        sigma = math.sqrt(max(p * (1 - p), 1e-9) * 2 / DRAWS)
        assert abs(observed[node_id] / DRAWS - reference[node_id] / DRAWS) <= 5 * sigma + 1e-4, (
            node_id
        )
    # the clade with the best success rate is favoured
    assert observed["a11"] < observed["a"] or counts["a11"][0] == 0


def test_hgm_task_outcome(archive: Archive) -> None:
    stats = archive._index.clade_stats("train", "tasks")
    b = archive._index.by_id["b"]
    # b (0.20), b1 (0.10), b2 (0.25) on 50 tasks each; b11 pending
    assert stats.counts(b) == (10 + 5 + 12, 40 + 45 + 38)
    assert archive.select_parent("hgm", random.Random(0), outcome="tasks") in eligible_table(
        archive
    )


def test_sample_beta_max_matches_brute_force() -> None:
    rng = random.Random(3)
    for a, b, k in [(3, 5, 40), (1, 4, 30), (6, 1, 25), (1, 1, 50), (2, 2, 17), (30, 70, 100)]:
        fast = sorted(sample_beta_max(a, b, k, rng) for _ in range(3000))
        slow = sorted(max(rng.betavariate(a, b) for _ in range(k)) for _ in range(3000))
        # two-sample Kolmogorov-Smirnov at alpha ~ 1e-4: D < 1.95 * sqrt(2 / n)
        d = max(
            abs(x - y)
            for x, y in zip(_ecdf(fast, fast + slow), _ecdf(slow, fast + slow), strict=True)
        )
        assert d < 1.95 * math.sqrt(2 / 3000), (a, b, k, d)


def _ecdf(sample: list[float], at: list[float]) -> list[float]:
    from bisect import bisect_right

    return [bisect_right(sample, x) / len(sample) for x in sorted(at)]


def test_beta_cdf_against_binomial_sum() -> None:
    for a, b in [(1, 1), (2, 3), (5, 2), (10, 40), (120, 80)]:
        n = a + b - 1
        for x in (0.01, 0.2, 0.5, 0.77, 0.99):
            exact = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
            assert beta_cdf(x, a, b) == pytest.approx(exact, abs=1e-10)


def test_median_absolute_deviation_against_brute_force() -> None:
    rng = random.Random(5)
    for size in list(range(1, 30)) + [101, 1000]:
        for _ in range(5):
            xs = sorted(rng.choice([rng.random(), round(rng.random(), 1)]) for _ in range(size))
            med = median_sorted(xs)
            assert med == statistics.median(xs)
            expected = statistics.median([abs(x - med) for x in xs])
            assert median_absolute_deviation(xs, med) == pytest.approx(expected, abs=1e-12)


def test_gate_filters_candidates(archive: Archive) -> None:
    rng = random.Random(0)
    picks = {archive.select_parent("uniform", rng, gate=Gate(min_score=0.6)) for _ in range(500)}
    assert picks == {"a1", "a11", "a12", "a111"}
    picks = {
        archive.select_parent("uniform", rng, gate=Gate(predicate=lambda n: n.id.startswith("b")))
        for _ in range(500)
    }
    assert picks == {"b", "b1", "b2"}
    with pytest.raises(NoEligibleNodeError, match="train"):
        archive.select_parent("uniform", rng, gate=Gate(min_n=51))
    with pytest.raises(NoEligibleNodeError):
        archive.select_parent("best", rng, split="test")
    assert archive.select_parent("best", rng, split="dev") == "d"
    for name in STRATEGIES:  # every strategy runs on a gated (copied) pool too
        assert archive.select_parent(name, rng, gate=Gate(min_score=0.6)) in {
            "a1",
            "a11",
            "a12",
            "a111",
        }


def test_same_seed_same_parents_even_across_reopen(tmp_path: Path) -> None:
    archive = build_tree(tmp_path / "run")
    for name in STRATEGIES:
        first = [archive.select_parent(name, random.Random(42)) for _ in range(3)]
        assert len(set(first)) == 1
    sequence = {
        name: [archive.select_parent(name, rng) for _ in range(50)]
        for name in STRATEGIES
        for rng in [random.Random(9)]
    }
    archive.close()
    with Archive(tmp_path / "run") as again:
        for name in STRATEGIES:
            rng = random.Random(9)
            assert [again.select_parent(name, rng) for _ in range(50)] == sequence[name], name


def test_custom_strategy_registry(archive: Archive) -> None:
    @register_strategy("worst")
    def worst() -> Callable[[Candidates, random.Random], str]:
        def pick(pool: Candidates, rng: random.Random) -> str:
            return pool.ids[min(range(len(pool)), key=pool.scores.__getitem__)]

        return pick

    try:
        assert archive.select_parent("worst", random.Random(0)) == "b1"
        assert archive.select_parent(lambda pool, rng: pool.ids[0], random.Random(0)) == "r"
        with pytest.raises(ValueError, match="unknown strategy 'nope'.*score_child_prop"):
            archive.select_parent("nope", random.Random(0))
    finally:
        del STRATEGIES["worst"]


def test_incremental_index_matches_rebuild(tmp_path: Path) -> None:
    """Random writes (adds, crossovers, status and score changes) keep every cache exact."""
    rng = random.Random(11)
    with Archive(tmp_path / "run") as archive:
        archive.add_root("m", "h", node_id="n0")
        ids = ["n0"]
        index = archive._index
        index.column("train")
        index.clade_stats("train", "improvement")
        index.clade_stats("train", "tasks")

        def weight(a: float, c: int) -> float:
            return (a + 0.1) / (1 + c)

        tree = index.column("train").weight_tree("test", weight)
        for step in range(400):
            op = rng.random()
            if op < 0.4:
                parents = [rng.choice(ids)]
                if rng.random() < 0.2:
                    parents.append(rng.choice(ids))
                ids.append(archive.add_child(parents, node_id=f"n{len(ids)}").id)
            elif op < 0.75:
                archive.record_scores(rng.choice(ids), {"train": Score(rng.randrange(11) / 10, 10)})
            elif op < 0.85:
                archive.set_status(rng.choice(ids), "failed", "boom")
            else:
                archive.set_status(
                    rng.choice(ids), rng.choice(["pending", "evaluating", "evaluated"])
                )
            if step % 50 == 49:
                fresh = SplitColumn("train")
                for e in index.entries.values():
                    if fresh.eligible(e):
                        fresh.include(e)
                col = index.columns["train"]
                for attr in ("seqs", "ids", "scores", "children", "sorted_scores", "ranked"):
                    assert getattr(col, attr) == getattr(fresh, attr), attr
                expected = {
                    seq: weight(a, c)
                    for seq, a, c in zip(col.seqs, col.scores, col.children, strict=True)
                }
                for seq, w in enumerate(tree.weights):
                    assert w == pytest.approx(expected.get(seq, 0.0)), seq
                assert tree.total() == pytest.approx(sum(expected.values()))
                for outcome in ("improvement", "tasks"):
                    cached = index.clades[("train", outcome)]
                    rebuilt = CladeStats(index, "train", outcome)
                    keys = set(cached.totals) | set(rebuilt.totals)
                    assert {k: cached.counts(k) for k in keys} == {
                        k: rebuilt.counts(k) for k in keys
                    }
                    assert cached.groups == rebuilt.groups


def test_hgm_large_groups_match_monte_carlo(tmp_path: Path) -> None:
    """20 siblings with clade counts (1, 1) exercise the deferred inverse-CDF path."""
    with Archive(tmp_path / "run") as archive:
        archive.add_root(
            "m", "h", node_id="r", status=Status.EVALUATED, scores={"train": Score(0.5, 10)}
        )
        specs = []
        for i in range(20):
            specs.append(
                NewNode(f"c{i}", ["r"], status=Status.EVALUATED, scores={"train": Score(0.5, 10)})
            )
            for tag, score in (("up", 0.9), ("down", 0.1)):
                specs.append(
                    NewNode(
                        f"c{i}{tag}",
                        [f"c{i}"],
                        status=Status.EVALUATED,
                        scores={"train": Score(score, 10)},
                    )
                )
        archive.add_many(specs)
        counts = clade_counts_by_hand(archive)
        assert counts["c3"] == (1, 1) and counts["r"] == (20, 40)
        table = eligible_table(archive)
        draws = 10_000
        rng = random.Random(99)
        reference: Counter[str] = Counter()
        for _ in range(draws):
            thetas = {i: rng.betavariate(1 + counts[i][0], 1 + counts[i][1]) for i in table}
            reference[max(thetas, key=thetas.__getitem__)] += 1
        rng = random.Random(5)
        observed = Counter(archive.select_parent("hgm", rng) for _ in range(draws))

        def by_kind(counter: Counter[str]) -> Counter[str]:
            return Counter(
                "root" if i == "r" else "mid" if i[-1].isdigit() else "leaf"
                for i in counter.elements()
            )

        ref, obs = by_kind(reference), by_kind(observed)
        for kind in ("root", "mid", "leaf"):
            p = (ref[kind] + obs[kind]) / (2 * draws)
            sigma = math.sqrt(max(p * (1 - p), 1e-9) * 2 / draws)
            assert abs(obs[kind] - ref[kind]) / draws <= 5 * sigma + 1e-4, (kind, ref, obs)
        assert obs["mid"] > 0


def test_weight_tree_draws_match_weights() -> None:
    tree = WeightTree([(1, 1.0), (2, 0.0), (3, 3.0)])
    tree.set(9, 2.0)  # beyond capacity: grows
    tree.set(1, 0.5)  # update
    tree.set(3, 0.0)  # removal
    tree.set(5, 1.5)
    expected = {1: 0.5, 5: 1.5, 9: 2.0}
    assert tree.total() == pytest.approx(4.0)
    rng = random.Random(1)
    counts = Counter(tree.sample(rng, lambda: -1) for _ in range(DRAWS))
    assert set(counts) == set(expected)
    for pos, w in expected.items():
        p = w / 4.0
        assert abs(counts[pos] - DRAWS * p) <= 5 * math.sqrt(DRAWS * p * (1 - p)) + 1
    empty = WeightTree()
    assert empty.sample(rng, lambda: -1) == -1


@pytest.mark.parametrize("name", ["score_child_prop", "weighted", "power_law", "best", "uniform"])
def test_maintained_trees_and_full_passes_pick_the_same(archive: Archive, name: str) -> None:
    """The O(log n) paths (default gate) and the O(n) passes (a gate admitting everyone) turn
    the same random numbers into the same parents, so a resumed run replays exactly."""
    everyone = Gate(min_score=-math.inf)
    fast, slow = random.Random(3), random.Random(3)
    for step in range(300):
        assert archive.select_parent(name, fast) == archive.select_parent(name, slow, gate=everyone)
        if step % 50 == 0:  # a write between draws: trees update, the scale may move
            archive.record_scores("b2", {"train": Score(0.25 + step / 1000, 50)})


@pytest.mark.parametrize("name", ["score_child_prop", "weighted"])
def test_full_pass_distribution(archive: Archive, name: str) -> None:
    table = eligible_table(archive)
    scores = [a for a, _ in table.values()]
    med = statistics.median(scores)
    mad = statistics.median([abs(a - med) for a in scores])
    gain, center = (10.0, 0.5) if name == "score_child_prop" else (10.0 / mad, med)
    expected = {i: sigmoid(gain * (a - center)) / (1 + n) for i, (a, n) in table.items()}
    assert_matches(draw(archive, name, gate=Gate(min_score=-math.inf)), expected)

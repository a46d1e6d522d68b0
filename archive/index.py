"""In-memory index of the lineage: the few columns selection needs, kept current on every write.

Selection at 100k nodes must take milliseconds, so we never re-read the table per draw. The
index is rebuilt from SQLite on open and updated only after a transaction commits, so it can
never hold a state the database does not.
"""

from __future__ import annotations

import gc
import sqlite3
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from archive.fenwick import WeightTree
from archive.node import Status

ScoreN = tuple[float, int]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many long-lived objects (re-enabled if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class Entry:
    """One node as the index sees it (seq = insertion order, stable across reopen)."""

    seq: int
    id: str
    parents: tuple[int, ...]
    status: Status
    scaffold: str
    scores: dict[str, ScoreN] = field(default_factory=dict)
    children: list[int] = field(default_factory=list)


class SplitColumn:
    """Nodes eligible under the default gate (evaluated, scored on the split), ordered by seq.

    Also keeps scores sorted ascending (median/MAD) and (-score, seq) sorted (rank, best).
    """

    def __init__(self, split: str) -> None:
        self.split = split
        self.seqs: list[int] = []
        self.ids: list[str] = []
        self.scores: list[float] = []
        self.children: list[int] = []
        self.sorted_scores: list[float] = []
        self.ranked: list[tuple[float, int]] = []
        self.member: dict[int, float] = {}
        # Weight trees for strategies whose weight depends on the node alone (key -> tree).
        self.trees: dict[object, tuple[Callable[[float, int], float], WeightTree]] = {}

    @classmethod
    def build(cls, split: str, entries: Iterator[Entry]) -> SplitColumn:
        """Bulk construction: one pass and two sorts (inserting one by one would be O(n^2))."""
        col = cls(split)
        rows = [
            (e.seq, e.id, e.scores[split][0], len(e.children)) for e in entries if col.eligible(e)
        ]
        rows.sort()
        col.seqs = [r[0] for r in rows]
        col.ids = [r[1] for r in rows]
        col.scores = [r[2] for r in rows]
        col.children = [r[3] for r in rows]
        col.sorted_scores = sorted(col.scores)
        col.ranked = sorted(zip([-a for a in col.scores], col.seqs, strict=True))
        col.member = dict(zip(col.seqs, col.scores, strict=True))
        return col

    def weight_tree(self, key: object, weight: Callable[[float, int], float]) -> WeightTree:
        """The tree of weight(score, children) over the column, kept current on every write."""
        found = self.trees.get(key)
        if found is None:
            tree = WeightTree(
                (seq, weight(a, c))
                for seq, a, c in zip(self.seqs, self.scores, self.children, strict=True)
            )
            found = self.trees[key] = (weight, tree)
        return found[1]

    def existing_tree(self, key: object) -> WeightTree | None:
        found = self.trees.get(key)
        return found[1] if found else None

    def drop_trees(self, family: str) -> None:
        """Stop maintaining trees whose key starts with `family` (their weights went stale)."""
        for key in [k for k in self.trees if isinstance(k, tuple) and k[0] == family]:
            del self.trees[key]

    def _reweigh(self, seq: int, i: int | None) -> None:
        for weight, tree in self.trees.values():
            tree.set(seq, 0.0 if i is None else weight(self.scores[i], self.children[i]))

    def eligible(self, e: Entry) -> bool:
        return e.status is Status.EVALUATED and self.split in e.scores

    def include(self, e: Entry) -> None:
        score = e.scores[self.split][0]
        i = bisect_left(self.seqs, e.seq)
        self.seqs.insert(i, e.seq)
        self.ids.insert(i, e.id)
        self.scores.insert(i, score)
        self.children.insert(i, len(e.children))
        insort(self.sorted_scores, score)
        insort(self.ranked, (-score, e.seq))
        self.member[e.seq] = score
        if self.trees:
            self._reweigh(e.seq, i)

    def exclude(self, seq: int) -> None:
        score = self.member.pop(seq)
        i = bisect_left(self.seqs, seq)
        for column in (self.seqs, self.ids, self.scores, self.children):
            del column[i]
        del self.sorted_scores[bisect_left(self.sorted_scores, score)]
        del self.ranked[bisect_left(self.ranked, (-score, seq))]
        if self.trees:
            self._reweigh(seq, None)

    def refresh(self, e: Entry) -> None:
        if e.seq in self.member:
            self.exclude(e.seq)
        if self.eligible(e):
            self.include(e)

    def bump_children(self, seq: int, count: int) -> None:
        if seq in self.member:
            i = bisect_left(self.seqs, seq)
            self.children[i] = count
            if self.trees:
                self._reweigh(seq, i)


class CladeStats:
    """Successes and failures summed over each node's clade, for HGM's metaproductivity.

    outcome "improvement": a node (not a root) is a success when evaluated with a score above
    the best of its parents' scores on the split, a failure when it scored no higher or its
    evaluation failed; it counts for its strict ancestors (the clade's productivity, not its own).
    outcome "tasks" (HGM paper): a node contributes its own solved/unsolved tasks (score * n)
    to itself and every ancestor.
    """

    def __init__(self, index: LineageIndex, split: str, outcome: str) -> None:
        if outcome not in ("improvement", "tasks"):
            raise ValueError(f"unknown HGM outcome {outcome!r}: use 'improvement' or 'tasks'")
        self.index, self.split, self.outcome = index, split, outcome
        self.column = index.column(split)
        self.own: dict[int, tuple[int, int]] = {}
        self.totals: dict[int, list[int]] = {}
        # Eligible nodes grouped by clade counts (S, F), each group sorted by seq: Thompson
        # sampling then costs one draw per distinct (S, F), not one per node.
        self.groups: dict[tuple[int, int], list[int]] = {}
        self.grouped: dict[int, tuple[int, int]] = {}
        self._build()
        for seq in self.column.seqs:
            self._group(seq)

    def _build(self) -> None:
        """Totals for the whole lineage in O(nodes) where it is a tree.

        A node is 'simple' when no crossover lies on or above it: its ancestors are its first-
        parent chain, so children-before-parents accumulation (reverse seq order) is exact.
        Crossovers and their descendants ('complex') add their contribution to each distinct
        ancestor by explicit walk, after the accumulation so nothing is carried twice.
        """
        entries = list(self.index.entries.values())
        own, totals = self.own, self.totals
        complex_: set[int] = set()
        for e in entries:
            contribution = self._contribution(e)
            if contribution != (0, 0):
                own[e.seq] = contribution
            ps = e.parents
            if len(ps) > 1 or (ps and ps[0] in complex_):
                complex_.add(e.seq)
        with_self = self.outcome == "tasks"
        for e in reversed(entries):
            seq = e.seq
            if seq in complex_:
                continue
            o = own.get(seq, (0, 0))
            below = totals.get(seq)
            carry_s = o[0] + (below[0] if below else 0)
            carry_f = o[1] + (below[1] if below else 0)
            if with_self and (o[0] or o[1]):
                totals[seq] = [carry_s, carry_f]
            if e.parents and (carry_s or carry_f):
                parent_total = totals.get(e.parents[0])
                if parent_total is None:
                    totals[e.parents[0]] = [carry_s, carry_f]
                else:
                    parent_total[0] += carry_s
                    parent_total[1] += carry_f
        for seq in complex_:
            o = own.get(seq)
            if o is None:
                continue
            targets = self.index.ancestors(seq)
            if with_self:
                targets = _chain([seq], targets)
            for target in targets:
                t = totals.get(target)
                if t is None:
                    totals[target] = [o[0], o[1]]
                else:
                    t[0] += o[0]
                    t[1] += o[1]

    def _contribution(self, e: Entry) -> tuple[int, int]:
        if self.outcome == "tasks":
            if e.status is not Status.EVALUATED or self.split not in e.scores:
                return (0, 0)
            score, n = e.scores[self.split]
            solved = min(n, max(0, round(score * n)))
            return (solved, n - solved)
        if not e.parents:
            return (0, 0)
        if e.status is Status.FAILED:
            return (0, 1)
        if e.status is not Status.EVALUATED or self.split not in e.scores:
            return (0, 0)
        parent_scores = [
            p.scores[self.split][0]
            for p in (self.index.entries[s] for s in e.parents)
            if p.status is Status.EVALUATED and self.split in p.scores
        ]
        if not parent_scores:
            return (0, 0)
        return (1, 0) if e.scores[self.split][0] > max(parent_scores) else (0, 1)

    def _apply(self, e: Entry, new: tuple[int, int]) -> None:
        old = self.own.get(e.seq, (0, 0))
        ds, df = new[0] - old[0], new[1] - old[1]
        if new == (0, 0):
            self.own.pop(e.seq, None)
        else:
            self.own[e.seq] = new
        if ds == 0 and df == 0:
            return
        targets = self.index.ancestors(e.seq)
        if self.outcome == "tasks":
            targets = _chain([e.seq], targets)
        grouped = self.grouped
        for seq in targets:
            t = self.totals.get(seq)
            if t is None:
                self.totals[seq] = [ds, df]
            else:
                t[0] += ds
                t[1] += df
            if seq in grouped:
                self._ungroup(seq)
                self._group(seq)

    def _group(self, seq: int) -> None:
        t = self.totals.get(seq)
        key = (t[0], t[1]) if t else (0, 0)
        self.grouped[seq] = key
        insort(self.groups.setdefault(key, []), seq)

    def _ungroup(self, seq: int) -> None:
        key = self.grouped.pop(seq)
        members = self.groups[key]
        del members[bisect_left(members, seq)]
        if not members:
            del self.groups[key]

    def refresh(self, e: Entry) -> None:
        """Re-derive the contributions a change to `e` can affect: its own and its children's."""
        if e.seq in self.grouped:
            self._ungroup(e.seq)
        if e.seq in self.column.member:
            self._group(e.seq)
        self._apply(e, self._contribution(e))
        if self.outcome == "improvement":
            for c in e.children:
                child = self.index.entries[c]
                self._apply(child, self._contribution(child))

    def counts(self, seq: int) -> tuple[int, int]:
        t = self.totals.get(seq)
        return (t[0], t[1]) if t else (0, 0)


def _chain(first: list[int], rest: Iterator[int]) -> Iterator[int]:
    yield from first
    yield from rest


class LineageIndex:
    """All nodes by seq and id, with children lists, split columns and clade stats on demand."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.by_id: dict[str, int] = {}
        self.columns: dict[str, SplitColumn] = {}
        self.clades: dict[tuple[str, str], CladeStats] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, e: Entry) -> None:
        """Register a committed node (its parents must already be present)."""
        self.entries[e.seq] = e
        self.by_id[e.id] = e.seq
        for p in dict.fromkeys(e.parents):
            parent = self.entries[p]
            parent.children.append(e.seq)
            for col in self.columns.values():
                col.bump_children(p, len(parent.children))
        self.changed(e)

    def changed(self, e: Entry) -> None:
        """Call after `e`'s status or scores changed (or it was just added)."""
        for col in self.columns.values():
            col.refresh(e)
        for stats in self.clades.values():
            stats.refresh(e)

    def column(self, split: str) -> SplitColumn:
        col = self.columns.get(split)
        if col is None:
            with paused_gc():
                col = SplitColumn.build(split, iter(self.entries.values()))
            self.columns[split] = col
        return col

    def clade_stats(self, split: str, outcome: str) -> CladeStats:
        stats = self.clades.get((split, outcome))
        if stats is None:
            with paused_gc():
                stats = CladeStats(self, split, outcome)
            self.clades[(split, outcome)] = stats
        return stats

    def ancestors(self, seq: int) -> Iterator[int]:
        """Each strict ancestor once (a crossover's shared ancestors are not counted twice)."""
        entries = self.entries
        parents = entries[seq].parents
        while len(parents) == 1:  # fast path: a plain chain needs no visited set
            seq = parents[0]
            yield seq
            parents = entries[seq].parents
        seen: set[int] = set()
        stack = list(parents)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            yield s
            stack.extend(entries[s].parents)


def load_index(db: sqlite3.Connection) -> LineageIndex:
    """Rebuild the in-memory index with three scans of small tables.

    The cyclic GC is paused meanwhile: 300k new containers would trigger hundreds of
    collections that find nothing to free (measured: ~30% of the load time).
    """
    with paused_gc():
        return _read_index(db)


def _read_index(db: sqlite3.Connection) -> LineageIndex:
    parents: dict[int, list[int]] = {}
    for child, parent in db.execute("SELECT child, parent FROM edges ORDER BY child, position"):
        ps = parents.get(child)
        if ps is None:
            parents[child] = [parent]
        else:
            ps.append(parent)
    scores: dict[int, dict[str, tuple[float, int]]] = {}
    for node, split, score, n in db.execute("SELECT node, split, score, n FROM scores"):
        per_node = scores.get(node)
        if per_node is None:
            scores[node] = {split: (score, n)}
        else:
            per_node[split] = (score, n)
    index = LineageIndex()
    entries, by_id = index.entries, index.by_id
    statuses = {s.value: s for s in Status}
    rows = db.execute("SELECT seq, id, status, scaffold FROM nodes ORDER BY seq").fetchall()
    for seq, node_id, status, scaffold in rows:
        ps = parents.get(seq)
        e = Entry(seq, node_id, tuple(ps) if ps else (), statuses[status], scaffold)
        if seq in scores:
            e.scores = scores[seq]
        entries[seq] = e
        by_id[node_id] = seq
        if ps:
            if len(ps) == 1:
                entries[ps[0]].children.append(seq)
            else:
                for p in dict.fromkeys(ps):
                    entries[p].children.append(seq)
    return index

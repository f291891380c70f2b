"""Exact and near-duplicate collapse. Every chunk keeps existing; duplicates are grouped behind one canonical.

Two rules, measured on the shared corpus:
- incremental-build slides: a chunk whose 3-word shingles are (nearly) all contained in a neighbouring chunk of
  the same document is folded into it (`contained_in`, decided at ingest, before embedding);
- across the whole library: chunks whose normalised text is identical or whose 3-word-shingle Jaccard >= 0.8
  form one group; across documents, a word-set Jaccard >= 0.8 (at least 8 distinct words) suffices, because
  the same deck exported to PDF and to PPTX yields the same words in another reading order (measured on the
  Harvard lecture 24 deck: 3-gram Jaccard collapsed 13 of 86 slide pairs, word sets 77).
The canonical chunk of a group is its longest member; the others become its `also_at` locations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ingest.textnorm import shingles, words

CONTAINMENT = 0.9
JACCARD = 0.8


def containment_links(texts: Sequence[str], window: int = 2) -> list[int | None]:
    """For each chunk of one document, the index of a later/earlier neighbour that contains it, else None."""
    sh = [shingles(t) for t in texts]
    parent: list[int | None] = [None] * len(texts)
    for i, a in enumerate(sh):
        if not a:
            continue
        best: int | None = None
        for j in range(max(0, i - window), min(len(texts), i + window + 1)):
            if j == i or len(sh[j]) < len(a) or (len(sh[j]) == len(a) and j < i):
                continue
            if len(a & sh[j]) / len(a) >= CONTAINMENT and (best is None or len(sh[j]) > len(sh[best])):
                best = j
        parent[i] = best
    # follow chains (a -> b -> c) to the final container
    for i in range(len(parent)):
        seen = {i}
        p = parent[i]
        while p is not None and parent[p] is not None and parent[p] not in seen:
            seen.add(p)
            p = parent[p]
        parent[i] = p
    return parent


@dataclass
class Groups:
    canonical: list[int]  # row index of each group's canonical chunk
    members: list[list[int]]  # row indices in each group, canonical first


class UnionFind:
    """Disjoint sets over 0..n-1; a group's root is its smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        """Members of every group, each in ascending order, groups by their smallest member."""
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return list(out.values())


def group_duplicates(texts: Sequence[str], contained: Sequence[int | None], embedded: Sequence[bool],
                     doc_ids: Sequence[str] | None = None) -> Groups:
    """Union-find over containment links, exact matches and shingle-Jaccard near-duplicates."""
    uf = UnionFind(len(texts))
    for i, c in enumerate(contained):
        if c is not None:
            uf.union(i, c)
    link_near_duplicates([shingles(t) for t in texts], uf.union)
    if doc_ids is not None:
        bags = word_bags(texts)

        def same_deck_other_file(a: int, b: int) -> bool:
            return doc_ids[a] != doc_ids[b] and numbers_agree(bags[a], bags[b])

        link_near_duplicates(bags, uf.union, keep=same_deck_other_file)
    canonical: list[int] = []
    members: list[list[int]] = []
    for rows in uf.groups():
        best = max(rows, key=lambda r: (embedded[r], len(texts[r]), -r))
        canonical.append(best)
        members.append([best] + [r for r in rows if r != best])
    order = sorted(range(len(canonical)), key=lambda g: canonical[g])
    return Groups([canonical[g] for g in order], [members[g] for g in order])


def numbers_agree(a: set[str], b: set[str]) -> bool:
    """"12 heads" and "8 heads" are not duplicates; a page number printed on one copy only is tolerated."""
    return len({w for w in a if w.isdigit()} ^ {w for w in b if w.isdigit()}) <= 1


def word_bags(texts: Sequence[str], min_words: int = 8) -> list[set]:
    """Distinct words of each text; texts with fewer than `min_words` get an empty bag (never matched)."""
    bags = [set(words(t)) for t in texts]
    return [b if len(b) >= min_words else set() for b in bags]


def link_near_duplicates(sets: Sequence[set], union: Callable[[int, int], None],
                     keep: Callable[[int, int], bool] | None = None, threshold: float = JACCARD) -> None:
    """Pairs with Jaccard >= threshold, via a sparse chunk x shingle matrix (exact, no sampling)."""
    from scipy import sparse

    vocab: dict[object, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, s in enumerate(sets):
        for h in s:
            rows.append(i)
            cols.append(vocab.setdefault(h, len(vocab)))
    if not rows:
        return
    m = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(sets), len(vocab)))
    inter = (m @ m.T).tocoo()
    sizes = np.array([len(s) for s in sets], dtype=np.float32)
    mask = inter.row < inter.col
    r, c, v = inter.row[mask], inter.col[mask], inter.data[mask]
    jac = v / (sizes[r] + sizes[c] - v)
    for a, b in zip(r[jac >= threshold], c[jac >= threshold], strict=True):
        if keep is None or keep(int(a), int(b)):
            union(int(a), int(b))

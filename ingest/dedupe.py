"""Exact and near-duplicate collapse. Every chunk keeps existing; duplicates are grouped behind one canonical.

Two rules, measured on the shared corpus:
- incremental-build slides: a chunk whose 3-word shingles are (nearly) all contained in a neighbouring chunk of
  the same document is folded into it (`contained_in`, decided at ingest, before embedding);
- across the whole library: chunks whose normalised text is identical or whose 3-word-shingle Jaccard >= 0.8
  form one group; across documents, a word-set Jaccard >= 0.8 (at least 8 distinct words) suffices, because
  the same deck exported to PDF and to PPTX yields the same words in another reading order (measured on the
  Harvard lecture 24 deck: 3-gram Jaccard collapsed 13 of 86 slide pairs, word sets 77).
The canonical chunk of a group is its longest member and every other member a direct near-duplicate of it (no
chains); the others become its `also_at` locations.
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


class NearDuplicates:
    """Near-duplicate links, grouped around canonical items WITHOUT chaining: every member of a group is a direct
    near-duplicate of the group's canonical. (Transitive groups, A~B and B~C putting A with C, once folded 57
    progressively built slides of three decks into one passage whose text lacked most of theirs.)"""

    def __init__(self, n: int) -> None:
        self.links: list[set[int]] = [set() for _ in range(n)]

    def link(self, a: int, b: int) -> None:
        self.links[a].add(b)
        self.links[b].add(a)

    def groups(self, order: Sequence[int]) -> list[list[int]]:
        """Star groups over the items in `order`, most preferred canonical first: each not-yet-grouped item
        becomes a canonical and takes its not-yet-grouped direct links (items outside `order` are ignored).
        Each group lists its canonical first."""
        allowed = set(order)
        taken: set[int] = set()
        out: list[list[int]] = []
        for i in order:
            if i in taken:
                continue
            members = [i] + sorted(j for j in self.links[i] if j in allowed and j not in taken)
            taken.update(members)
            out.append(members)
        return out


def group_duplicates(texts: Sequence[str], contained: Sequence[int | None], embedded: Sequence[bool],
                     doc_ids: Sequence[str] | None = None) -> Groups:
    """Containment links, exact matches and near-duplicates (shingle Jaccard; across documents word sets), in
    star groups around the longest embedded chunk; a contained chunk joins the group of its container."""
    dups = NearDuplicates(len(texts))
    link_near_duplicates([shingles(t) for t in texts], dups.link)
    if doc_ids is not None:
        bags = word_bags(texts)

        def same_deck_other_file(a: int, b: int) -> bool:
            return doc_ids[a] != doc_ids[b] and numbers_agree(bags[a], bags[b])

        link_near_duplicates(bags, dups.link, keep=same_deck_other_file)
    free = sorted((i for i in range(len(texts)) if contained[i] is None),
                  key=lambda r: (not embedded[r], -len(texts[r]), r))
    members = dups.groups(free)
    group_of = {m: g for g, rows in enumerate(members) for m in rows}
    for i, c in enumerate(contained):
        if c is not None:
            members[group_of[c]].append(i)
    order = sorted(range(len(members)), key=lambda g: members[g][0])
    return Groups([members[g][0] for g in order], [members[g] for g in order])


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

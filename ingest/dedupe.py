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

Bounded by the input: pairs are found by prefix filtering (each set's rarest 1 - threshold of features, by
library-wide frequency; two sets with Jaccard >= threshold always share one of them), never by multiplying the
chunk x feature matrix by itself. That product paired every chunk with every other through "the" and "of": a
50 MiB repetitive text asked for 29 GiB while the library's write lock was held. A feature that opens the prefix
of more than HUBS sets (a huge family of near-copies) pairs each of those sets with the first HUBS of them only,
so a set meets at most HUBS others per prefix feature. Sets are numbered in the order canonicals are preferred,
so a group's canonical, first in every list it is in, still finds all of its near-duplicates. On the shared
corpus the longest such list has 57 sets (word bags; 16 for shingles): the result is exact, groups identical to
the matrix product's, in 0.7 s instead of 1.5 s (one run, 1,631 chunks). A family of 5,000 mutual near-copies:
318k links in 2.4 s, where the product held all 12.5M pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ingest.textnorm import shingles, words

CONTAINMENT = 0.9
JACCARD = 0.8
HUBS = 64
VERIFY_BATCH = 100_000  # candidate pairs whose intersections are counted at once (sparse rows: ~100 MB)


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
    # follow chains (a -> b -> c) to the final container. A link always goes to a chunk later in (shingle count,
    # position) order, so resolving from the last chunk in that order back makes this linear (following each
    # chain anew was quadratic in a repetitive text, where every chunk is contained in the next).
    root: list[int] = list(range(len(texts)))
    for i in sorted(range(len(texts)), key=lambda k: (len(sh[k]), k), reverse=True):
        p = parent[i]
        if p is not None:
            root[i] = root[p]
    return [root[p] if p is not None else None for p in parent]


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
    # Only chunks that are not contained in another can be grouped (a contained one follows its container), and
    # they are linked in the order they are preferred as canonicals (see HUBS).
    free = sorted((i for i in range(len(texts)) if contained[i] is None),
                  key=lambda r: (not embedded[r], -len(texts[r]), r))

    def link(a: int, b: int) -> None:
        dups.link(free[a], free[b])

    link_near_duplicates([shingles(texts[r]) for r in free], link)
    if doc_ids is not None:
        bags = word_bags([texts[r] for r in free])

        def same_deck_other_file(a: int, b: int) -> bool:
            return doc_ids[free[a]] != doc_ids[free[b]] and numbers_agree(bags[a], bags[b])

        link_near_duplicates(bags, link, keep=same_deck_other_file)
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
                         keep: Callable[[int, int], bool] | None = None, threshold: float = JACCARD,
                         hubs: int = HUBS) -> int:
    """Call union(a, b) for the pairs a < b with Jaccard >= threshold (and keep(a, b)); returns the number of
    candidate pairs checked. Exact, unless a feature opens the prefix of more than `hubs` sets (module doc)."""
    from scipy import sparse

    vocab: dict[object, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, s in enumerate(sets):
        for h in s:
            rows.append(i)
            cols.append(vocab.setdefault(h, len(vocab)))
    if not rows:
        return 0
    row = np.asarray(rows, dtype=np.int64)
    col = np.asarray(cols, dtype=np.int64)
    df = np.bincount(col, minlength=len(vocab))
    order = np.lexsort((col, df[col], row))  # by set, then rarest feature first (ties: first seen)
    row, col = row[order], col[order]
    sizes = np.bincount(row, minlength=len(sets))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(len(row)) - starts[row]
    # |a & b| >= ceil(t |a|) for Jaccard >= t; a prefix one longer than |a| - ceil(t |a|) must then hold a shared
    # feature (the epsilon keeps 0.8 * 15 = 12.000000000000002 from rounding up).
    prefix_len = sizes - np.ceil(threshold * sizes - 1e-9).astype(np.int64) + 1
    in_prefix = rank < prefix_len[row]
    p_row, p_col = row[in_prefix], col[in_prefix]
    by_feature = np.lexsort((p_row, p_col))
    p_row, p_col = p_row[by_feature], p_col[by_feature]
    bounds = np.flatnonzero(np.diff(p_col)) + 1
    lefts: list[np.ndarray] = []
    rights: list[np.ndarray] = []
    seen: set[bytes] = set()  # features shared by the same sets give the same pairs: once is enough
    for members in np.split(p_row, bounds):
        m = len(members)
        if m < 2 or (key := members.tobytes()) in seen:
            continue
        seen.add(key)
        a, b = np.triu_indices(m, 1) if m <= hubs else _hub_pairs(m, hubs)
        lefts.append(members[a])
        rights.append(members[b])
    if not lefts:
        return 0
    pairs = np.sort(np.concatenate(lefts) * len(sets) + np.concatenate(rights))
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
    left, right = pairs // len(sets), pairs % len(sets)
    small, large = np.minimum(sizes[left], sizes[right]), np.maximum(sizes[left], sizes[right])
    fits = small >= threshold * large - 1e-9  # Jaccard <= |small| / |large|
    left, right = left[fits], right[fits]
    m = sparse.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)), shape=(len(sets), len(vocab)))
    for start in range(0, len(left), VERIFY_BATCH):
        a, b = left[start : start + VERIFY_BATCH], right[start : start + VERIFY_BATCH]
        inter = np.asarray(m[a].multiply(m[b]).sum(axis=1)).ravel()
        jac = inter / (sizes[a] + sizes[b] - inter)
        for x, y in zip(a[jac >= threshold].tolist(), b[jac >= threshold].tolist(), strict=True):
            if keep is None or keep(x, y):
                union(x, y)
    return len(left)


def _hub_pairs(m: int, hubs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (h, k), h < k, of a list of m sets where h is one of the first `hubs`: O(m * hubs), not O(m^2)."""
    h = np.repeat(np.arange(hubs), m - 1 - np.arange(hubs))
    k = np.concatenate([np.arange(i + 1, m) for i in range(hubs)])
    return h, k

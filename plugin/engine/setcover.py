"""Minimum set cover over small universes, as bitmasks.

Elements are integers whose bits say which sets contain them. The solver removes dominated elements, takes
sets forced by elements only one set covers, then runs a depth-first branch and bound from a greedy solution.
It proves the optimum when it finishes within its time budget; otherwise it returns the best cover found.
"""

import time


def minimum_cover(elements, n_sets, time_budget=1.0):
    """Smallest list of set indices covering every element; returns (indices, proven_optimal).

    ``elements``: iterable of int bitmasks (bit i set when set i covers the element); zero masks are ignored.
    """
    elements = _reduce(e for e in elements if e)
    if not elements:
        return [], True
    forced = 0
    for element in elements:
        if element & (element - 1) == 0:
            forced |= element
    remaining = [e for e in elements if not e & forced]
    best = _greedy(remaining, n_sets)
    deadline = time.monotonic() + time_budget
    search = _Search(remaining, n_sets, best, deadline)
    search.run(0, 0)
    chosen = _bits(forced) + search.best
    return sorted(chosen), not search.timed_out


def _reduce(elements):
    """Unique elements, dropping any whose covering sets include another element's (it is then covered too)."""
    unique = sorted(set(elements), key=lambda e: bin(e).count("1"))
    kept = []
    for element in unique:
        if not any(k & element == k for k in kept):
            kept.append(element)
    return kept


def _bits(mask):
    indices, i = [], 0
    while mask:
        if mask & 1:
            indices.append(i)
        mask >>= 1
        i += 1
    return indices


def _greedy(elements, n_sets):
    chosen, uncovered = [], list(elements)
    while uncovered:
        counts = [0] * n_sets
        for element in uncovered:
            for i in _bits(element):
                counts[i] += 1
        pick = max(range(n_sets), key=counts.__getitem__)
        chosen.append(pick)
        uncovered = [e for e in uncovered if not e >> pick & 1]
    return _prune(chosen, elements)


def _prune(chosen, elements):
    """Drop sets a cover does not need (greedy often keeps some)."""
    chosen = list(chosen)
    for index in sorted(chosen, reverse=True):
        rest = sum(1 << i for i in chosen if i != index)
        if all(e & rest for e in elements):
            chosen.remove(index)
    return chosen


class _Search:
    def __init__(self, elements, n_sets, best, deadline):
        self.elements = elements
        self.best = best
        self.deadline = deadline
        self.timed_out = False
        self.calls = 0
        # How many elements each set covers: branch on big sets first.
        self.weight = [sum(1 for e in elements if e >> i & 1) for i in range(n_sets)]

    def run(self, chosen_mask, depth):
        uncovered = [e for e in self.elements if not e & chosen_mask]
        if not uncovered:
            if depth < len(self.best):
                self.best = _bits(chosen_mask)
            return
        if depth + _lower_bound(uncovered) >= len(self.best) or self._out_of_time():
            return
        pivot = min(uncovered, key=lambda e: bin(e).count("1"))
        for index in sorted(_bits(pivot), key=lambda i: -self.weight[i]):
            self.run(chosen_mask | 1 << index, depth + 1)

    def _out_of_time(self):
        self.calls += 1
        if self.calls % 64 == 0 and time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out


def _lower_bound(uncovered):
    """Elements no two of which share a set each need their own set."""
    bound, used = 0, 0
    for element in sorted(uncovered, key=lambda e: bin(e).count("1")):
        if not element & used:
            used |= element
            bound += 1
    return bound


# --- large universes: sparse sets, greedy -------------------------------------------------------------------

def greedy_cover(elements, n_sets, priority=None):
    """A small cover for large problems (too many sets for bitmasks): greedy with lazy gains, ties to the
    higher ``priority`` then the lower index, pruned. ``elements``: tuples of the set indices covering each."""
    import heapq

    elements = [tuple(e) for e in elements if e]
    priority = priority or [0] * n_sets
    holds = [[] for _ in range(n_sets)]
    for number, element in enumerate(elements):
        for index in element:
            holds[index].append(number)
    covered = [False] * len(elements)
    heap = [(-len(holds[i]), -priority[i], i) for i in range(n_sets) if holds[i]]
    heapq.heapify(heap)
    chosen, left = [], len(elements)
    while left and heap:
        gain, rank, index = heapq.heappop(heap)
        fresh = sum(1 for e in holds[index] if not covered[e])
        if fresh != -gain:  # stale gain: put it back with the true one
            if fresh:
                heapq.heappush(heap, (-fresh, rank, index))
            continue
        chosen.append(index)
        for e in holds[index]:
            if not covered[e]:
                covered[e] = True
                left -= 1
    return _prune_sparse(chosen, elements, priority)


def _prune_sparse(chosen, elements, priority):
    """Drop chosen sets whose every element another chosen set covers, lowest priority first."""
    chosen_set = set(chosen)
    counts = {}
    for element in elements:
        counts[element] = sum(1 for i in element if i in chosen_set)
    by_set = {}
    for element in elements:
        for index in element:
            if index in chosen_set:
                by_set.setdefault(index, []).append(element)
    for index in sorted(chosen_set, key=lambda i: (priority[i], -i)):
        if all(counts[e] > 1 for e in by_set.get(index, [])):
            chosen_set.discard(index)
            for e in by_set.get(index, []):
                counts[e] -= 1
    return sorted(chosen_set)


def improve_cover(chosen, elements, priority):
    """Swap chosen sets for unchosen ones of higher ``priority`` while the cover stays a cover of the same size
    (deterministic: sets and replacements in index order)."""
    elements = [tuple(e) for e in elements if e]
    chosen = set(chosen)
    members = {}
    for element in elements:
        for index in element:
            members.setdefault(index, []).append(element)
    for index in sorted(chosen):
        needs = [e for e in members.get(index, []) if sum(1 for i in e if i in chosen) == 1]
        options = set.intersection(*(set(e) for e in needs)) if needs else set()
        better = sorted((i for i in options - chosen if priority[i] > priority[index]), key=lambda i: (-priority[i], i))
        if better:
            chosen.discard(index)
            chosen.add(better[0])
    return sorted(chosen)

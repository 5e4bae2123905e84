"""Seeding people from candidates, best first (docs/DECODER.md §5).

The sequential PersonLab rule: take the candidates best first; one that is not near the
same keypoint of a person already kept seeds a new person (its walk, completed by long
range). Walks and completions depend only on their own seed, so the fast version walks
every candidate at once, runs the greedy pass, completes in one batch the kept people
not completed yet, and repeats the pass until every kept person is complete: the last
pass is then exactly the sequential one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .sampling import sqnorm
from .voting import Candidates
from .walk import Poses


def greedy_seeds(cands: Candidates, poses: Poses, *, radius: float, max_people: int) -> np.ndarray:
    """Indices of the candidates that seed people, in seeding order.

    ``poses`` row n is candidate n's person. Candidate n is skipped when a kept person
    has a found keypoint of n's type within ``radius`` of it. Costs one pass over the
    candidates per kept person.
    """
    alive = np.ones(len(cands), bool)
    kept: list[int] = []
    c = 0
    while len(kept) < max_people and c < len(cands):
        c += int(alive[c:].argmax())
        if not alive[c]:
            break
        kept.append(c)
        near = sqnorm(poses.xy[c, cands.types] - cands.xy) <= radius * radius
        alive &= ~(poses.found[c, cands.types] & near)
        alive[c] = False
    return np.asarray(kept, np.intp)


def seed_people(cands: Candidates, poses: Poses, *, radius: float, max_people: int,
                complete: Callable[[Poses], Poses] | None = None) -> Poses:
    """The people seeded from ``cands`` (walked ``poses``, one row per candidate), in
    seeding order, each completed by ``complete`` when given."""
    if complete is None:
        return poses.take(greedy_seeds(cands, poses, radius=radius, max_people=max_people))
    done = np.zeros(len(cands), bool)
    while True:
        kept = greedy_seeds(cands, poses, radius=radius, max_people=max_people)
        todo = kept[~done[kept]]
        if todo.size == 0:
            return poses.take(kept)
        poses = poses.put(todo, complete(poses.take(todo)))
        done[todo] = True

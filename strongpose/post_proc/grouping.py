"""Seeding people from candidates, best first (docs/DECODER.md §5).

The sequential PersonLab loop: take the candidates best first; one that is not near the
same keypoint of a person already kept seeds a new person, grown from it: walked along
the tree, then completed by long range. A person depends only on its own seed, so the
fast loop does the work in batches and gets exactly the sequential result:

- walks run when the loop first needs one: that candidate and the next ``WALK_BATCH``
  still alive, at once (one vectorised step per tree level); the people kept from a
  batch skip most of the candidates after it, so few are walked in vain, and most
  images need one batch;
- the greedy pass runs on the walked people; the kept people not completed yet are
  completed in one batch, and the pass is repeated until every kept person is complete.
  The last pass is then the sequential loop.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from strongpose.skeleton import Skeleton

from .sampling import sqnorm
from .voting import Candidates
from .walk import Poses

WALK_BATCH = 128     # candidates walked together (a speed setting only)


def greedy_pass(cands: Candidates, people: Poses, walked: np.ndarray,
                walk: Callable[[Poses], Poses], *, radius: float,
                max_people: int) -> tuple[np.ndarray, Poses]:
    """One greedy pass: the candidates that seed people, in order, and ``people`` with
    every candidate the pass reached walked (``walked`` is updated).

    Candidate n is skipped when a kept person has a found keypoint of n's type within
    ``radius`` of it. One pass over the candidates per kept person.
    """
    alive = np.ones(len(cands), bool)
    kept: list[int] = []
    while len(kept) < max_people and alive.any():
        c = int(alive.argmax())                               # the best candidate left
        if not walked[c]:                                     # c and the next ones, together
            rows = np.flatnonzero(alive & ~walked)[:WALK_BATCH]
            people = people.put(rows, walk(people.take(rows)))
            walked[rows] = True
        kept.append(c)
        near = sqnorm(people.xy[c, cands.types] - cands.xy) <= radius * radius
        alive &= ~(people.found[c, cands.types] & near)
        alive[c] = False
    return np.asarray(kept, np.intp), people


def seed_people(cands: Candidates, walk: Callable[[Poses], Poses],
                complete: Callable[[Poses], Poses] | None, *, skeleton: Skeleton,
                radius: float, max_people: int) -> Poses:
    """The people seeded from ``cands``, in seeding order, at most ``max_people``.

    ``walk`` grows seed-only poses along the tree; ``complete`` (None: no completion)
    completes walked ones; both take any batch of rows.
    """
    people = Poses.from_candidates(cands, skeleton)     # row n: candidate n's person
    walked = np.zeros(len(cands), bool)
    done = np.zeros(len(cands), bool)
    while True:
        kept, people = greedy_pass(cands, people, walked, walk, radius=radius, max_people=max_people)
        todo = kept[~done[kept]]
        if complete is None or todo.size == 0:
            return people.take(kept)
        people = people.put(todo, complete(people.take(todo)))
        done[todo] = True

"""Skeleton: COCO defaults, derived edges and flips, custom sets, refusal of bad trees."""

import pytest

from strongpose.skeleton import COCO_SKELETON, Skeleton, SkeletonError


def test_coco_defaults():
    sk = COCO_SKELETON
    assert sk.num_keypoints == 17 and sk.num_edges == 16
    assert sk.names[0] == "nose" and sk.names[16] == "right_ankle"
    assert sk.directed_edges[:16] == sk.edges
    assert sk.directed_edges[16:] == tuple((b, a) for a, b in sk.edges)


def test_flip_permutation_swaps_left_and_right():
    perm = COCO_SKELETON.flip_permutation
    names = COCO_SKELETON.names
    for i, j in enumerate(perm):
        a, b = names[i], names[j]
        assert a.replace("left", "X").replace("right", "left").replace("X", "right") == b
    assert tuple(perm[p] for p in perm) == tuple(range(17))  # an involution


def test_directed_edge_flip_permutation_maps_edges_to_mirrored_edges():
    sk = COCO_SKELETON
    perm, eperm = sk.flip_permutation, sk.directed_edge_flip_permutation
    for e, (a, b) in enumerate(sk.directed_edges):
        assert sk.directed_edges[eperm[e]] == (perm[a], perm[b])


def test_custom_skeleton_by_names():
    sk = Skeleton.from_dict({
        "names": ["head", "l_hand", "r_hand", "hip"],
        "edges": [["head", "l_hand"], ["head", "r_hand"], ["head", "hip"]],
        "flip_pairs": [["l_hand", "r_hand"]],
        "sigmas": [0.05, 0.06, 0.06, 0.1],
    })
    assert sk.num_keypoints == 4 and sk.num_edges == 3
    assert sk.edges == ((0, 1), (0, 2), (0, 3))
    assert sk.flip_permutation == (0, 2, 1, 3)
    assert Skeleton.from_dict(sk.to_dict()) == sk


@pytest.mark.parametrize("edges, fragment", [
    ([(0, 1), (1, 2)], "do not form one tree"),            # keypoint 3 unreached
    ([(0, 1), (1, 2), (2, 0)], "do not form one tree"),    # a cycle, 3 unreached
    ([(0, 1), (1, 2), (2, 3), (3, 0)], "do not form one tree"),  # too many edges
    ([(0, 1), (1, 2), (2, 7)], "not a pair of distinct keypoints"),
    ([(0, 0), (1, 2), (2, 3)], "not a pair of distinct keypoints"),
])
def test_bad_tree_is_refused(edges, fragment):
    with pytest.raises(SkeletonError, match=fragment):
        Skeleton(names=("a", "b", "c", "d"), edges=edges, flip_pairs=(), sigmas=(0.1,) * 4)


def test_bad_sigmas_and_flip_pairs_are_refused():
    base = dict(names=("a", "b", "c"), edges=((0, 1), (1, 2)))
    with pytest.raises(SkeletonError, match="sigmas"):
        Skeleton(**base, flip_pairs=(), sigmas=(0.1, 0.1))
    with pytest.raises(SkeletonError, match="flip_pairs"):
        Skeleton(**base, flip_pairs=((0, 1), (1, 2)), sigmas=(0.1,) * 3)
    with pytest.raises(SkeletonError, match="unknown keypoint name"):
        Skeleton.from_dict({"names": ["a", "b"], "edges": [["a", "z"]], "sigmas": [1, 1]})

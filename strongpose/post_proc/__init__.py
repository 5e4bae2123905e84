"""Maps of one image -> people (NumPy/SciPy, vectorised): the PersonLab decoder.

    decoder = Decoder.from_config(cfg)
    people = decoder(maps, transform)                 # one image's maps, docs/MAPS.md keys
    per_image = decoder.decode_outputs(outputs, transforms)   # a batch of network outputs

docs/DECODER.md defines every step exactly; the modules follow its sections:

- :mod:`.inputs`: maps are checked at the boundary; network outputs -> probability maps;
- :mod:`.sampling`: bilinear reads at points, short-offset snaps;
- :mod:`.voting`: Hough voting, score map, ranked and capped keypoint candidates;
- :mod:`.walk`: poses and the mid-range walk along the kinematic tree;
- :mod:`.long_range`: long-range completion of a walked person;
- :mod:`.grouping`: greedy seeding, best candidate first;
- :mod:`.scores`: soft keypoint-NMS person scores;
- :mod:`.masks`: instance masks and boxes;
- :mod:`.decoder`: the steps in order, :class:`Decoder`, :class:`Person`.

Cost is bounded by the map, not by what it holds: voting and masks are linear in the
cells, everything after the candidate caps by ``max_candidates x K`` and
``max_people x K``.
"""

from .decoder import Decoder, Person, decode, original_size
from .scores import soft_nms_scores
from .voting import box_sum, find_candidates, hough_maps, hough_vote

__all__ = ["Decoder", "Person", "decode", "original_size", "soft_nms_scores", "box_sum",
           "find_candidates", "hough_maps", "hough_vote"]

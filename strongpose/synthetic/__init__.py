"""A small synthetic COCO keypoints data set: drawn human-like figures with known answers.

    python -m strongpose.synthetic data/synth --train 200 --val 50 --seed 0 --size 257

    from strongpose.synthetic import write_splits, write_dataset, render_image
    files = write_splits("data/synth", train=200, val=50, seed=0)   # {"train": Path, "val": Path}
    ann = write_dataset("data/synth", split="val", images=20, size=(193, 257), seed=1)

Layout (COCO's own, so ``data.coco_root=data/synth data.train_split=train
data.val_split=val`` points the config at it)::

    OUT/annotations/person_keypoints_<split>.json
    OUT/<split>/000000000001.jpg ...

Each image: a background (a colour gradient, noise, and plain shapes: rectangles, discs,
triangles, thin lines), then perhaps a crowd, then 0..N people drawn in order, each over
the ones before (occlusion order = drawing order). A person is a random pose of a plausible
skeleton (height, position, tilt, limb angles, facing the camera or away, a partly turned
body) drawn with OpenCV without anti-aliasing: legs with feet, torso polygon, arms (long,
short or no sleeves) with a hand beyond each wrist, neck and a head (an ellipse under a cap
of hair; facing the camera, dark eyes and a darker nose at their keypoints), in the
person's own colours: every keypoint but the ears (on the head's outline) is a visible
feature. What the person's pixels are is known exactly: its
annotation mask is what stays visible of its drawing after the later people are drawn.

Annotations (``iscrowd`` 0 unless said):
  * person: 17 keypoints at the joints (the face on the head); v = 2 where the person's own
    pixel is on top, v = 1 where a later person covers it (or the face of a person seen from
    behind), v = 0 with x = y = 0 outside the image or, at ``unlabelled_rate``, at random;
    ``segmentation`` polygons traced from the visible mask (pycocotools rasterises them
    back to the same pixels: IoU ~1), ``area`` = pixels of that rasterisation, ``bbox`` its box;
  * person with a mask and no keypoints (``num_keypoints`` 0, at ``mask_only_rate``): an
    ignore region for the heat-map loss;
  * crowd (``iscrowd`` 1, in about ``crowd_rate`` of the non-empty images): a cluster of small
    figures as one uncompressed-RLE region, no keypoints.
Placement keeps every annotated person decodable: a person that would hide more than
``1 - MIN_VISIBLE`` of one drawn before it, or bring a keypoint within ``MIN_SEPARATION``
pixels of the same keypoint of another person, is drawn again elsewhere (or left out).

Deterministic: image ``i`` of split ``s`` with seed ``n`` is drawn from its own random
generator seeded by ``(n, crc32(s), i)``: the same arguments give the same JSON and the same
image bytes; another seed or split gives other images. No TensorFlow here.
"""

from .figures import Figure, draw_background, draw_figure, random_figure
from .options import SynthOptions
from .scenes import SynthImage, SynthPerson, image_rng, render_image, uncompressed_rle
from .writing import annotation_path, category, write_dataset, write_splits

__all__ = ["Figure", "SynthImage", "SynthOptions", "SynthPerson", "annotation_path", "category",
           "draw_background", "draw_figure", "image_rng", "random_figure", "render_image",
           "uncompressed_rle", "write_dataset", "write_splits"]

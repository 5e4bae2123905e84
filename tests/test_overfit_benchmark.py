"""benchmarks/overfit.py: a few steps on 2 coco-mini images end with its JSON line."""

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def test_overfit_smoke(coco_mini_annotations, tmp_path, capsys):
    import overfit
    overfit.main(["--config", "tiny", "--images", "2", "--phases", "2", "--phase-steps", "2",
                  "--output", str(tmp_path), "--annotations", str(coco_mini_annotations),
                  "--images-dir", str(coco_mini_annotations.parents[1] / "train2017"),
                  "--size", "129", "train.batch_size=2"])
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert {"AP", "AP50", "seconds", "phases", "images", "people"} <= set(out)
    assert 0.0 <= out["AP"] <= 1.0 and out["seconds"] > 0 and out["images"] == 2
    assert [ph[0] for ph in out["phases"]] == [2, 4]
    assert sum(line.startswith("step ") for line in lines) == 2
    assert (tmp_path / "data" / "annotations" / "person_keypoints_overfit.json").is_file()

"""benchmarks/decode_compare.py: this decoder against a git revision's, interleaved."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import load_benchmark

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "decode_compare.py"


def _head() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if out.returncode:
        pytest.skip("not a git checkout")
    return out.stdout.strip()


def test_against_head_on_the_synthetic_set(synth, capsys):
    head = _head()
    summary = load_benchmark("decode_compare").main(["--against", head, "--annotations", str(synth.annotation_file),
                            "--people", "2", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    for name in ("this", head):
        row = summary[name]
        assert row["ms_median"] > 0 and set(row["ms_by_people"]) == {"1", "2"}
        assert row["ratio"] > 0


def test_an_unknown_revision_is_one_line_and_status_2(synth):
    out = subprocess.run([sys.executable, str(SCRIPT), "--against", "no-such-rev",
                          "--annotations", str(synth.annotation_file)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("decode_compare.py: error: git")

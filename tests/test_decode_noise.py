"""The decoder on noise maps (what an untrained network puts out) and on hostile maps.

Noise maps (``benchmarks/decode_noise.py``): heat and body uniform in [0.4, 0.6],
short/mid/long offsets N(0, sigma) px. The decoder must decode them in bounded time and
memory (docs/DECODER.md, "Cost": nothing is candidates x candidates) and return at most
``max_people`` people whose keypoints are finite and inside the image. Hostile maps
(all zero, all-one heat, offsets of 1e6 px) must give finite people inside the image too.

The default run decodes 65x65 cells (the bounds here are generous: 1 s and 300 MB
traced, against the benchmark's 50 ms); ``-m slow`` adds 129x129 and 201x201 and the
benchmark script end to end. ``STRONGPOSE_NOISE_CELLS=17`` makes the default-run tests
use 17x17 maps instead (to try them on a decoder that cannot take 65x65).

Every decode runs under :func:`decode_noise.address_space_limit` (the address space may
grow by at most ``GUARD_MB``): a decoder that would take the machine's memory fails its
test with a MemoryError instead.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import load_benchmark
from strongpose.config import load_config

BENCH_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_noise.py"
CELLS = int(os.environ.get("STRONGPOSE_NOISE_CELLS", "65"))
GUARD_MB = 2048
MAX_MS = 1000.0          # generous: the budget at 65x65 is 50 ms
MAX_PEAK_MB = 300.0
SLOW_MAX_MS = {129: 2000.0, 201: 4000.0}   # budgets 200 / 500 ms


bench = load_benchmark("decode_noise")


@pytest.fixture(scope="module")
def cfg():
    return load_config("personlab")


@pytest.fixture(scope="module")
def decoder(cfg):
    from strongpose import post_proc
    return post_proc.Decoder.from_config(cfg)


def guarded(decoder, maps, **kwargs):
    """``decoder(maps)`` with the address space bounded; MemoryError fails the test."""
    try:
        with bench.address_space_limit(GUARD_MB):
            return decoder(maps, **kwargs)
    except MemoryError as exc:
        pytest.fail(f"the decoder needed more than {GUARD_MB} MB of extra address space on "
                    f"{maps['heatmap'].shape[:2]} maps: {exc}", pytrace=False)


def check_people(people, decoder, cells, max_people):
    """At most max_people people, best first; finite keypoints inside the image, finite scores.

    Fails once, with every problem found listed (keypoints by index and value)."""
    h, w = cells
    s = decoder.stride
    k = decoder.skeleton.num_keypoints
    x_max, y_max = s * (w - 1), s * (h - 1)
    problems = []
    if len(people) > max_people:
        problems.append(f"{len(people)} people, more than max_people = {max_people}")
    scores = [float(p.score) for p in people]
    if not all(math.isfinite(v) and v > 0 for v in scores):
        problems.append(f"person scores not all finite and > 0: {scores}")
    elif scores != sorted(scores, reverse=True):
        problems.append(f"people not ordered best first: {scores}")
    for n, p in enumerate(people):
        kps = np.asarray(p.keypoints, np.float64)
        if kps.shape != (k, 3):
            problems.append(f"person {n}: keypoints of shape {kps.shape}, want ({k}, 3)")
            continue
        bad = ~np.isfinite(kps).all(axis=1)
        if bad.any():
            problems.append(f"person {n}: non-finite keypoints {np.flatnonzero(bad).tolist()}, "
                            f"e.g. {kps[bad][0].tolist()}")
        x, y = kps[:, 0], kps[:, 1]
        out = ~bad & ((x < 0) | (x > x_max) | (y < 0) | (y > y_max))
        if out.any():
            idx = np.flatnonzero(out)
            shown = ", ".join(f"{i}: ({x[i]:.6g}, {y[i]:.6g})" for i in idx[:3])
            problems.append(f"person {n}: {idx.size} keypoints outside the image [0, {x_max}] x "
                            f"[0, {y_max}], e.g. {shown}")
        if (kps[~bad, 2] < 0).any():
            problems.append(f"person {n}: negative keypoint scores {kps[:, 2].tolist()}")
        if len(p.box) != 4 or not all(math.isfinite(float(v)) for v in p.box):
            problems.append(f"person {n}: box {p.box} is not 4 finite numbers")
        if p.mask is not None and p.mask.shape != (y_max + 1, x_max + 1):
            problems.append(f"person {n}: mask of shape {p.mask.shape}, "
                            f"want {(y_max + 1, x_max + 1)}")
    if problems:
        more = [f"... and {len(problems) - 6} more"] if len(problems) > 6 else []
        pytest.fail(f"{h}x{w} maps, {len(people)} people:\n  " + "\n  ".join(problems[:6] + more),
                    pytrace=False)


# ------------------------------------------------------------------ the benchmark's parts
def test_noise_maps_follow_the_recipe(cfg):
    k, e = cfg.skeleton.num_keypoints, cfg.skeleton.num_edges
    maps = bench.noise_maps((9, 11), cfg, sigma=10.0, seed=3)
    shapes = {key: v.shape for key, v in maps.items()}
    assert shapes == {"heatmap": (9, 11, k), "short": (9, 11, 2 * k), "mid": (9, 11, 4 * e),
                      "long": (9, 11, 2 * k), "body": (9, 11, 1)}
    assert all(v.dtype == np.float32 for v in maps.values())
    for key in ("heatmap", "body"):
        assert maps[key].min() >= 0.4 and maps[key].max() <= 0.6
    big = bench.noise_maps(40, cfg, sigma=10.0, seed=3)
    assert np.std(big["mid"]) == pytest.approx(10.0, rel=0.05)
    again = bench.noise_maps((9, 11), cfg, sigma=10.0, seed=3)
    assert all(np.array_equal(maps[key], again[key]) for key in maps)
    other = bench.noise_maps((9, 11), cfg, sigma=10.0, seed=4)
    assert not np.array_equal(maps["short"], other["short"])


def test_count_peaks_known_answer(cfg):
    """One exact disk of keypoint type 2 on a grid point: one peak, of that type only."""
    s, radius, k = 8, 32.0, cfg.skeleton.num_keypoints
    h = w = 21
    heat = np.zeros((h, w, k), np.float32)
    short = np.zeros((h, w, 2 * k), np.float32)
    kx, ky = 10 * s, 9 * s
    ii, jj = np.mgrid[0:h, 0:w]
    dx, dy = kx - s * jj, ky - s * ii
    disk = dx ** 2 + dy ** 2 <= radius ** 2
    heat[disk, 2] = 1.0
    short[..., 4], short[..., 5] = dx, dy
    counts = bench.count_peaks({"heatmap": heat, "short": short}, s, radius, 0.01)
    assert counts.tolist() == [0, 0, 1] + [0] * (k - 3)
    assert bench.capped_count([5, 300, 0], 100, 1000) == 105
    assert bench.capped_count([500] * 17, 100, 1000) == 1000


def test_help_needs_no_heavy_imports():
    out = subprocess.run([sys.executable, "-X", "importtime", str(BENCH_PATH), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout and "--sizes" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert not imported & {"numpy", "tensorflow", "keras", "cv2", "scipy"}
    # Of the package, only its standard-library command-line plumbing.
    assert {m for m in imported if m.startswith("strongpose")} <= {"strongpose", "strongpose.cli"}


def test_worker_out_of_memory_is_a_failed_size_not_a_crash():
    args = bench.parse_args(["--sizes", "9", "--repeats", "1", "--mem-limit-mb", "1"])
    result = bench.judge(9, bench.run_size(9, args))
    assert result["ok"] is False and result["pass"] is False
    assert "MemoryError" in result["error"]


def test_worker_timeout_is_a_failed_size():
    args = bench.parse_args(["--sizes", "9", "--repeats", "1", "--timeout", "0.05"])
    result = bench.judge(9, bench.run_size(9, args))
    assert result["ok"] is False and result["pass"] is False
    assert result["error"].startswith("timeout")


# ---------------------------------------------------------------------- noise maps
def _decode_noise(decoder, cfg, cells, sigma):
    maps = bench.noise_maps(cells, cfg, sigma=sigma, seed=0)
    people = guarded(decoder, maps)                      # warm-up, and the checked result
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        guarded(decoder, maps)
        times.append((time.perf_counter() - t0) * 1e3)
    _, peak_mb = bench.traced_peak_mb(guarded, decoder, maps)
    return people, min(times), peak_mb


@pytest.mark.parametrize("sigma", [8.0, 16.0])
def test_noise_decodes_fast_and_small(decoder, cfg, sigma):
    people, ms, peak_mb = _decode_noise(decoder, cfg, CELLS, sigma)
    assert ms < MAX_MS, f"{CELLS}x{CELLS} noise maps: {ms:.0f} ms (bound {MAX_MS:.0f})"
    assert peak_mb < MAX_PEAK_MB, \
        f"{CELLS}x{CELLS} noise maps: {peak_mb:.0f} MB traced peak (bound {MAX_PEAK_MB:.0f})"
    check_people(people, decoder, (CELLS, CELLS), cfg.decoder.max_people)


def test_noise_respects_max_people(cfg):
    from strongpose import post_proc

    small = load_config("personlab", ["decoder.max_people=3"])
    decoder = post_proc.Decoder.from_config(small)
    people = guarded(decoder, bench.noise_maps(CELLS, cfg, sigma=12.0, seed=1))
    check_people(people, decoder, (CELLS, CELLS), 3)


@pytest.mark.slow
@pytest.mark.parametrize("cells", [129, 201])
def test_large_noise_decodes_in_bounds(decoder, cfg, cells):
    people, ms, peak_mb = _decode_noise(decoder, cfg, cells, 12.0)
    assert ms < SLOW_MAX_MS[cells], f"{cells}x{cells}: {ms:.0f} ms (bound {SLOW_MAX_MS[cells]:.0f})"
    assert peak_mb < MAX_PEAK_MB, f"{cells}x{cells}: {peak_mb:.0f} MB traced peak"
    check_people(people, decoder, (cells, cells), cfg.decoder.max_people)


@pytest.mark.slow
def test_benchmark_script_json(tmp_path):
    out_file = tmp_path / "noise.json"
    proc = subprocess.run([sys.executable, str(BENCH_PATH), "--sizes", "17", "65", "--repeats", "2",
                           "--timeout", "240", "--json-out", str(out_file), "--check"],
                          capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out_file.read_text()) == summary
    assert proc.returncode == (0 if summary["all_pass"] else 1), proc.stderr
    assert set(summary["sizes"]) == {"17", "65"}
    assert summary["config"] == "personlab" and summary["stride"] == 8
    assert summary["machine"]["cpus"] >= 1 and summary["date"]
    assert "65x65" in proc.stderr and "peak MB" in proc.stderr
    small, big = summary["sizes"]["17"], summary["sizes"]["65"]
    assert small["pass"] is None and small["budget_ms"] is None
    assert big["budget_ms"] == 50.0 and big["budget_mb"] == 300.0
    for r in (small, big):
        assert r["ok"], r.get("error")
        assert r["ms"] > 0 and r["peak_mb"] >= 0 and r["rss_mb"] >= 0
        assert 0 <= r["people"] <= r["max_people"] and r["candidates"] >= r["capped"] >= 0
        assert r["repeats"] >= 1
    assert big["pass"] == (big["ms"] <= 50.0 and big["peak_mb"] <= 300.0)
    assert summary["all_pass"] == big["pass"]


# -------------------------------------------------------------------- hostile maps
def _hostile(kind, cfg, cells):
    k, e = cfg.skeleton.num_keypoints, cfg.skeleton.num_edges
    rng = np.random.default_rng(7)
    shape = (cells, cells)

    def full(c, v):
        return np.full(shape + (c,), v, np.float32)

    def huge(c):
        return np.float32(1e6) * rng.choice(np.float32([-1, 1]), size=shape + (c,))

    noise = bench.noise_maps(cells, cfg, sigma=12.0, seed=7)
    if kind == "all_zero":
        return {"heatmap": full(k, 0), "short": full(2 * k, 0), "mid": full(4 * e, 0),
                "long": full(2 * k, 0), "body": full(1, 0)}
    if kind == "all_one_heat":        # every cell ties: every cell is a peak
        return {"heatmap": full(k, 1), "short": full(2 * k, 0), "mid": full(4 * e, 0),
                "long": full(2 * k, 0), "body": full(1, 1)}
    if kind == "all_one_heat_noisy_offsets":
        return dict(noise, heatmap=full(k, 1), body=full(1, 1))
    if kind == "huge_offsets":        # half the short offsets 1e6 px; mid and long all of them
        short = np.where(rng.random(shape + (2 * k,)) < 0.5, huge(2 * k), noise["short"])
        return dict(noise, short=short.astype(np.float32), mid=huge(4 * e), long=huge(2 * k))
    if kind == "huge_offsets_everywhere":
        return dict(noise, short=huge(2 * k), mid=huge(4 * e), long=huge(2 * k))
    raise ValueError(kind)


HOSTILE = ["all_zero", "all_one_heat", "all_one_heat_noisy_offsets", "huge_offsets",
           "huge_offsets_everywhere"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_maps_give_finite_people_inside_the_image(decoder, cfg, kind):
    maps = _hostile(kind, cfg, CELLS)
    people = guarded(decoder, maps)
    check_people(people, decoder, (CELLS, CELLS), cfg.decoder.max_people)
    if kind == "all_zero":
        assert people == [], "no heat anywhere: no people"

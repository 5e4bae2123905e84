"""Decoder on noise maps (what an untrained network puts out): time and extra memory per size.

    python benchmarks/decode_noise.py
    python benchmarks/decode_noise.py --sizes 65 129 201 --sigma 12 --repeats 5 --check
    python benchmarks/decode_noise.py --config strongpose decoder.max_candidates=500

Maps (one image, float32, ``size x size`` cells, K and E from the config's skeleton):
``heatmap`` and ``body`` uniform in [0.4, 0.6], ``short``, ``mid`` and ``long`` offsets
N(0, ``--sigma``) input pixels (default 12; an untrained network gives 8 to 16). The
generator is seeded with ``(--seed, size)``, so each size gets the same maps whatever
else is run. The decoder is ``post_proc.Decoder.from_config(cfg)`` (default preset
``personlab``: stride 8, disk radius 32 px), called as ``decoder(maps)``.

Every size runs in its own fresh subprocess (this script with ``--worker SIZE``), whose
address space may grow by at most ``--mem-limit-mb`` (default 4096) beyond what it holds
once its imports are done (``resource.setrlimit(RLIMIT_AS)``), and which is killed after
``--timeout`` seconds (default 300). A decoder that runs out of memory or time fails that
size instead of taking the machine down; the next size still runs. In the worker, in order:

1. **RSS cross-check**: the first decode of the fresh process, without tracemalloc.
   Peak RSS is reset (``/proc/self/clear_refs``) just before it, and ``rss_mb`` is peak
   RSS (``VmHWM``) during the call minus RSS (``VmRSS``) before it. Where the reset is
   not allowed it falls back to ``resource.getrusage`` ``ru_maxrss`` growth over the call
   (a lifetime peak: it may read low). ``rss_method`` says which. It counts what the OS
   gave the process, including one-time costs of a first call (code pages, allocator
   arenas), and C allocations that tracemalloc does not see. This call is also the
   warm-up.
2. **Time**: ``--repeats`` decodes (default 5), each timed with ``time.perf_counter``;
   ``ms`` is their median (``ms_min`` and ``ms_max`` are also reported). Where the
   warm-up shows that the repeats would overrun half the timeout, fewer are run (at
   least 1); ``repeats`` says how many.
3. **Traced memory**: one decode under ``tracemalloc`` (started after the maps exist).
   ``peak_mb`` is the traced peak during the call minus the traced size before it:
   the extra memory of one decode. NumPy reports its data buffers to tracemalloc, so
   arrays count in full; buffers that compiled code (OpenCV, SciPy) allocates and frees
   internally do not.

Also per size: ``candidates``, the peaks of the Hough maps before the caps
(docs/DECODER.md section 2: strong >= peak_threshold, > 0, equal to its 3x3 maximum),
counted by this script from the maps, outside the timed calls; ``capped``, what the
caps ``max_candidates_per_type`` / ``max_candidates`` leave of them; ``people``, how many
people the decoder returned. Budgets (docs/DECODER.md): 65 cells: 50 ms, 129: 200 ms,
201: 500 ms, each with ``peak_mb`` <= 300 MB; ``pass`` is null for other sizes. A size
whose worker failed (out of memory, timeout, exception) has ``ok: false``, its ``error``,
and ``pass: false``.

A table goes to stderr; the last stdout line is one JSON object
``{"sizes": {"65": {...}, ...}, "all_pass": ..., "machine": {...}, "date": ..., ...}``.
The exit status is 0 whatever the figures, unless ``--check`` is given: then it is 1
when a size with a budget fails it or a size fails to run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from strongpose import cli  # noqa: E402  (standard library only: --help stays fast)

#: cells -> (ms, MB): docs/DECODER.md's budgets for one decode of noise maps.
BUDGETS: dict[int, tuple[float, float]] = {65: (50.0, 300.0), 129: (200.0, 300.0),
                                           201: (500.0, 300.0)}
DEFAULT_SIZES = (65, 129, 201)
MB = 1024.0 * 1024.0


# ------------------------------------------------------------------------- maps
def noise_maps(size: int | tuple[int, int], cfg: Any, sigma: float = 12.0,
               seed: int = 0) -> dict[str, Any]:
    """Noise maps of one image (docs/MAPS.md keys, float32 ``(h, w, C)``).

    ``heatmap`` and ``body`` uniform in [0.4, 0.6]; ``short``, ``mid``, ``long`` N(0, sigma)
    input pixels. ``size``: cells, ``n`` or ``(h, w)``. Seeded with ``(seed, h, w)``.
    """
    import numpy as np

    h, w = (size, size) if isinstance(size, int) else size
    k, e = cfg.skeleton.num_keypoints, cfg.skeleton.num_edges
    rng = np.random.default_rng([int(seed), int(h), int(w)])

    def uniform(c: int) -> np.ndarray:
        return (np.float32(0.4) + np.float32(0.2) * rng.random((h, w, c), dtype=np.float32))

    def normal(c: int) -> np.ndarray:
        return np.float32(sigma) * rng.standard_normal((h, w, c), dtype=np.float32)

    return {"heatmap": uniform(k), "short": normal(2 * k), "mid": normal(4 * e),
            "long": normal(2 * k), "body": uniform(1)}


def count_peaks(maps: dict[str, Any], stride: int, disk_radius: float,
                threshold: float) -> Any:
    """Peaks of the Hough maps per keypoint type (K,), before any cap (DECODER.md 2.1-2.2).

    Every cell with heat > 0 votes for ``p + S_k(p)`` (map cells, clamped to [-1, w] x
    [-1, h]), splatted bilinearly; the sum over ``pi (R/s)^2`` is the strong map. A peak
    is a cell with strong >= threshold, > 0, equal to its 3x3 maximum (zeros outside).
    The quarter-pixel de-duplication of the decoder is not applied.
    """
    import numpy as np

    heat = np.asarray(maps["heatmap"], np.float32)
    short = np.asarray(maps["short"], np.float32)
    h, w, k = heat.shape
    ii, jj, kk = np.nonzero(heat > 0)
    weight = heat[ii, jj, kk].astype(np.float64)
    tx = np.clip(jj + short[ii, jj, 2 * kk].astype(np.float64) / stride, -1.0, float(w))
    ty = np.clip(ii + short[ii, jj, 2 * kk + 1].astype(np.float64) / stride, -1.0, float(h))
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = tx - x0, ty - y0
    x0, y0 = x0.astype(np.intp) + 1, y0.astype(np.intp) + 1     # on a grid padded by 1 before
    row = (w + 3) * k                                            # and 2 after: no bounds checks
    flat = np.zeros((h + 3) * row)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                       (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        flat += np.bincount((y0 + dy) * row + (x0 + dx) * k + kk, wt * weight,
                            minlength=flat.size)
    strong = flat.reshape(h + 3, w + 3, k)
    strong = strong[1:h + 1, 1:w + 1] / (math.pi * (disk_radius / stride) ** 2)
    padded = np.pad(strong, ((1, 1), (1, 1), (0, 0)))
    rows = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])
    box_max = np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    peaks = (strong >= threshold) & (strong > 0) & (strong == box_max)
    return peaks.sum(axis=(0, 1))


def capped_count(per_type: Any, per_type_cap: int, total_cap: int) -> int:
    """Candidates left by the caps: the first ``per_type_cap`` of each type, then ``total_cap``."""
    return int(min(total_cap, sum(min(int(n), per_type_cap) for n in per_type)))


# ----------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, VmSize), or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


def _maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r // 1024) if sys.platform == "darwin" else int(r)  # bytes on macOS


def address_space_now() -> Optional[int]:
    """The process's virtual size in bytes (VmSize), or None where unknown."""
    kb = _proc_status_kb("VmSize")
    return None if kb is None else kb * 1024


@contextlib.contextmanager
def address_space_limit(extra_mb: float) -> Iterator[Optional[int]]:
    """Lower the soft RLIMIT_AS to the current virtual size + ``extra_mb`` for the block.

    Allocations beyond it raise MemoryError instead of driving the machine out of memory.
    The previous limit is restored afterwards. Yields the limit set (bytes), or None where
    the virtual size is unknown (then nothing is limited).
    """
    now = address_space_now()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if now is None:
        yield None
        return
    limit = now + int(extra_mb * MB)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def traced_peak_mb(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` under tracemalloc: (its result, traced peak growth in MB)."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        out = fn(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return out, max(0.0, (peak - base) / MB)


def rss_growth_mb(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, str]:
    """``fn(...)``: (its result, peak RSS during the call minus RSS before, MB; method)."""
    gc.collect()
    if _reset_peak_rss():
        before = _proc_status_kb("VmRSS") or 0
        out = fn(*args, **kwargs)
        peak = _proc_status_kb("VmHWM") or 0
        return out, max(0.0, (peak - before) / 1024.0), "VmHWM-VmRSS (clear_refs reset)"
    before = _maxrss_kb()
    out = fn(*args, **kwargs)
    return out, max(0.0, (_maxrss_kb() - before) / 1024.0), "ru_maxrss growth"


# ------------------------------------------------------------------------ worker
def measure(size: int, cfg: Any, *, sigma: float = 12.0, seed: int = 0, repeats: int = 5,
            time_budget_s: float = math.inf,
            out: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Decode the noise maps of ``size`` cells in this process: the figures of one size.

    See the module docstring for the order (RSS + warm-up, timed repeats, tracemalloc).
    ``time_budget_s``: seconds the repeats may take in all (fewer repeats if needed).
    ``out``: a dict to fill as the figures come (what was measured before a failure stays).
    """
    from strongpose import post_proc

    out = {} if out is None else out
    decoder = post_proc.Decoder.from_config(cfg)
    maps = noise_maps(size, cfg, sigma, seed)
    peaks = count_peaks(maps, decoder.stride, decoder.disk_radius, cfg.decoder.peak_threshold)
    out.update({
        "decoder": f"{post_proc.__name__} ({Path(post_proc.__file__).resolve()})",
        "cells": [size, size], "stride": decoder.stride,
        "image": [decoder.stride * (size - 1) + 1] * 2,
        "candidates": int(peaks.sum()),
        "capped": capped_count(peaks, cfg.decoder.max_candidates_per_type,
                               cfg.decoder.max_candidates),
    })
    t0 = time.perf_counter()
    people, rss_mb, method = rss_growth_mb(decoder, maps)
    warm_s = time.perf_counter() - t0
    out.update(rss_mb=rss_mb, rss_method=method, warmup_ms=warm_s * 1e3)
    n = max(1, min(repeats, int(time_budget_s / max(warm_s, 1e-9))))
    times = []
    for _ in range(n):
        gc.collect()
        t0 = time.perf_counter()
        people = decoder(maps)
        times.append((time.perf_counter() - t0) * 1e3)
    out.update(ms=statistics.median(times), ms_min=min(times), ms_max=max(times), repeats=n)
    people, peak_mb = traced_peak_mb(decoder, maps)
    out.update(peak_mb=peak_mb, people=len(people), max_people=cfg.decoder.max_people)
    return out


def _worker(args: argparse.Namespace) -> int:
    """``--worker SIZE``: one size, under the address-space limit; one JSON line on stdout."""
    from strongpose.config import load_config

    cfg = load_config(args.config, args.overrides)
    import numpy  # noqa: F401  (imported before the limit: its import is not the decode's)
    from strongpose import post_proc  # noqa: F401

    result: dict[str, Any] = {"ok": False}
    try:
        with address_space_limit(args.mem_limit_mb) as limit:
            result["address_space_limit_mb"] = None if limit is None else limit / MB
            measure(args.worker, cfg, sigma=args.sigma, seed=args.seed, repeats=args.repeats,
                    time_budget_s=args.timeout / 2, out=result)
        result["ok"] = True
    except MemoryError as exc:
        result["error"] = (f"MemoryError: needed more than {args.mem_limit_mb:.0f} MB of extra "
                           f"address space ({exc or 'no detail'})")
    except Exception as exc:  # noqa: BLE001  (any failure of the decoder is a result here)
        result["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 3


# ------------------------------------------------------------------------ parent
def worker_command(size: int, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(size),
           "--sigma", repr(args.sigma), "--seed", str(args.seed), "--repeats", str(args.repeats),
           "--timeout", repr(args.timeout), "--mem-limit-mb", repr(args.mem_limit_mb)]
    if args.config is not None:
        cmd += ["--config", str(args.config)]
    return cmd + list(args.overrides)


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size in a fresh subprocess with the memory limit and the timeout; its figures."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(worker_command(size, args), capture_output=True, text=True,
                              timeout=args.timeout, env=env, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout: killed after {args.timeout:g} s",
                "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        return {"ok": False, "error": f"worker {how}: {tail}", "wall_s": wall}
    result["wall_s"] = wall
    return result


def judge(size: int, result: dict[str, Any]) -> dict[str, Any]:
    """Add the budgets and ``pass`` (None where the size has no budget) to a size's figures."""
    budget = BUDGETS.get(size)
    result["budget_ms"], result["budget_mb"] = budget if budget else (None, None)
    if not result.get("ok"):
        result["pass"] = False
    elif budget is None:
        result["pass"] = None
    else:
        result["pass"] = bool(result["ms"] <= budget[0] and result["peak_mb"] <= budget[1])
    return result


def machine_info() -> dict[str, Any]:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {"host": platform.node(), "platform": platform.platform(), "cpu": cpu,
            "cpus": os.cpu_count(), "cpus_usable": len(affinity) if affinity else None,
            "python": platform.python_version(), "numpy": np.__version__}


def _fmt(v: Any, spec: str) -> str:
    """``v`` formatted by ``spec`` (e.g. "9.1f"), or "-" right-aligned to its width."""
    return format("-", ">" + spec.split(".")[0].rstrip("dfs")) if v is None else format(v, spec)


def table(sizes: dict[str, dict[str, Any]]) -> str:
    head = (f"{'cells':>7} {'ms':>9} {'budget':>7} {'peak MB':>9} {'rss MB':>8} {'budget':>7} "
            f"{'cands':>7} {'capped':>7} {'people':>6}  result")
    rows = [head, "-" * len(head)]
    for key, r in sizes.items():
        verdict = {True: "pass", False: "FAIL", None: "(no budget)"}[r["pass"]]
        if not r.get("ok"):
            verdict += f": {r.get('error')}"
        rows.append(f"{key + 'x' + key:>7} {_fmt(r.get('ms'), '9.1f')} "
                    f"{_fmt(r.get('budget_ms'), '7.0f')} {_fmt(r.get('peak_mb'), '9.1f')} "
                    f"{_fmt(r.get('rss_mb'), '8.1f')} {_fmt(r.get('budget_mb'), '7.0f')} "
                    f"{_fmt(r.get('candidates'), '7d')} {_fmt(r.get('capped'), '7d')} "
                    f"{_fmt(r.get('people'), '6d')}  {verdict}")
    return "\n".join(rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = cli.ArgumentParser(prog="decode_noise.py", description=__doc__.split("\n")[0],
                                 epilog="Details: the module docstring of this script.")
    ap.add_argument("--sizes", nargs="+", default=[str(n) for n in DEFAULT_SIZES],
                    help="map sizes in cells (square maps); default 65 129 201")
    ap.add_argument("--sigma", type=float, default=12.0,
                    help="std of the short/mid/long offsets, input pixels (default 12)")
    ap.add_argument("--repeats", type=int, default=5, help="timed decodes per size (median)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (with the size)")
    ap.add_argument("--config", default="personlab",
                    help="preset name or YAML path (default personlab: stride 8)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds before a size's worker is killed (default 300)")
    ap.add_argument("--mem-limit-mb", type=float, default=4096.0,
                    help="extra address space a worker may take (RLIMIT_AS; default 4096)")
    ap.add_argument("--budget", action="store_true",
                    help="no-op: sizes with a budget (65, 129, 201) are always marked pass/fail")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a size fails its budget or fails to run")
    ap.add_argument("--json-out", default=None, help="also write the JSON object here")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. decoder.max_people=10")
    args = ap.parse_args(argv)
    # "--sizes 65 129 decoder.x=1": the overrides that --sizes swallowed go back to overrides
    args.overrides = [v for v in args.sizes if "=" in v] + list(args.overrides)
    try:
        args.sizes = [int(v) for v in args.sizes if "=" not in v]
    except ValueError:
        ap.error(f"--sizes takes whole numbers of cells, got {args.sizes}")
    if not args.sizes:
        ap.error("--sizes needs at least one size")
    if min(args.sizes) < 1 or args.repeats < 1 or args.sigma < 0:
        ap.error("--sizes must be >= 1, --repeats >= 1, --sigma >= 0")
    if args.timeout <= 0 or args.mem_limit_mb <= 0:
        ap.error("--timeout and --mem-limit-mb must be > 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return _worker(args)
    from strongpose.config import load_config

    cfg = load_config(args.config, args.overrides)  # bad overrides stop here, not per size
    sizes: dict[str, dict[str, Any]] = {}
    for size in dict.fromkeys(args.sizes):
        print(f"decode_noise: {size}x{size} cells ...", file=sys.stderr, flush=True)
        sizes[str(size)] = judge(size, run_size(size, args))
    judged = [r["pass"] for r in sizes.values() if r["pass"] is not None]
    rss_methods = sorted({r["rss_method"] for r in sizes.values() if r.get("rss_method")})
    summary = {
        "sizes": sizes,
        "all_pass": all(judged) if judged else None,
        "config": args.config, "overrides": list(args.overrides),
        "stride": cfg.eval_output_stride, "disk_radius": cfg.codec.disk_radius,
        "keypoints": cfg.skeleton.num_keypoints, "edges": cfg.skeleton.num_edges,
        "sigma": args.sigma, "seed": args.seed, "repeats": args.repeats,
        "timeout_s": args.timeout, "mem_limit_mb": args.mem_limit_mb,
        "peak_mb_method": "tracemalloc peak growth during one decode",
        "rss_method": rss_methods[0] if len(rss_methods) == 1 else rss_methods,
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"noise maps: heat/body U[0.4, 0.6], offsets N(0, {args.sigma:g}) px; config "
          f"{args.config} (stride {summary['stride']}); peak MB: tracemalloc, rss MB: "
          f"{summary['rss_method']} (first decode in a fresh process)", file=sys.stderr)
    print(table(sizes), file=sys.stderr, flush=True)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    if args.check and not (all(judged) and all(r.get("ok") for r in sizes.values())):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="decode_noise.py"))

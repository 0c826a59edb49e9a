"""Benchmark the pre-training stage: per-check time, passes, model vs framework time, start-up.

    python scripts/bench.py                          # resnet/digits, default checks, 3 repeats
    python scripts/bench.py --model gpt --repeats 5
    python scripts/bench.py --trackers none,mlflow,wandb   # logging cost, same run

Times are medians over repeats, taken in one process after one warm-up stage (thread pools,
kernel caches), so ratios between rows are comparable. "model" is the time inside the root
module's forward and the backward passes; "outside" is everything else: data loading, the
check's own arithmetic, plotting and saving figures, logging.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from trackcheck.cli import build_data, build_model_factories, build_pipeline, register_configs
from trackcheck.core import Report
from trackcheck.runner import run


def compose_cfg(model: str, overrides: list[str]) -> Any:
    register_configs()
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        return compose("config", overrides=[f"+model={model}", *overrides])


def stage(cfg: Any, tracker: Any = None) -> Report:
    from hydra.utils import instantiate

    data = build_data(cfg)
    factory, bigger = build_model_factories(cfg, data)
    params = {n: OmegaConf.to_object(cfg.checks[n]) for n in cfg.checks if n != "run"}
    return run(
        factory,
        data,
        checks=list(cfg.checks.run),
        params=params,
        optimizer=instantiate(cfg.optim),
        pipeline=build_pipeline(cfg),  # loss=..., step=... overrides reach the benchmark too
        device=cfg.device,
        seed=cfg.seed,
        tracker=tracker,
        output_dir=tempfile.mkdtemp(prefix="trackcheck-bench-"),
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        bigger_model=bigger,
        progress=False,
    )


def make_tracker(name: str, workdir: Path) -> Any:
    if name == "none":
        return None
    if name == "mlflow":
        from trackcheck.trackers.mlflow import MLflowTracker

        return MLflowTracker(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    if name == "wandb":
        from trackcheck.trackers.wandb import WandbTracker  # type: ignore[import-not-found]

        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(workdir))
        return WandbTracker(project="trackcheck-bench")
    raise ValueError(f"unknown tracker {name!r}")


def startup_seconds(model: str) -> tuple[float, float]:
    """(wall time of `python -m trackcheck`, of which the stage itself) for one checks run."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "trackcheck",
                f"+model={model}",
                "tracker=none",
                "checks.run=[loss_at_init]",
                "progress=false",
            ],
            cwd=d,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        (report,) = Path(d).glob("outputs/*/*/report.json")
        return wall, json.loads(report.read_text())["duration_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trackers", default="none", help="comma list: none,mlflow,wandb")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. checks=fast")
    args = ap.parse_args()

    import torch

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    wall, stage_s = startup_seconds(args.model)
    print(
        f"process start-up: `python -m trackcheck` with one check took {wall:.2f}s, "
        f"of which the stage {stage_s:.2f}s -> start-up and exit {wall - stage_s:.2f}s"
    )

    cfg = compose_cfg(args.model, args.overrides)
    stage(cfg)  # warm-up: thread pools, allocator, kernel selection
    with tempfile.TemporaryDirectory() as d:
        totals: dict[str, list[float]] = {}
        per_check: dict[str, list[Any]] = {}
        for _ in range(args.repeats):
            for name in args.trackers.split(","):
                t0 = time.perf_counter()
                report = stage(cfg, make_tracker(name, Path(d)))
                totals.setdefault(name, []).append(time.perf_counter() - t0)
                if name == args.trackers.split(",")[0]:
                    for c in report.checks:
                        per_check.setdefault(c.name, []).append(c)
        print(f"\n{args.model}, {args.repeats} repeats, medians:")
        print(
            f"{'check':<24}{'status':<7}{'time s':>8}{'model s':>9}{'outside':>9}"
            f"{'fwd':>6}{'bwd':>6}"
        )
        sum_t = sum_m = 0.0
        for name, runs in per_check.items():
            t = statistics.median(c.duration_s for c in runs)
            m = statistics.median(c.model_s for c in runs)
            sum_t, sum_m = sum_t + t, sum_m + m
            print(
                f"{name:<24}{runs[-1].status.value:<7}{t:8.2f}{m:9.2f}{(t - m) / t:9.0%}"
                f"{runs[-1].n_forward:6d}{runs[-1].n_backward:6d}"
            )
        print(f"{'checks total':<31}{sum_t:8.2f}{sum_m:9.2f}{(sum_t - sum_m) / sum_t:9.0%}")
        base = statistics.median(totals[args.trackers.split(",")[0]])
        for name, ts in totals.items():
            med = statistics.median(ts)
            print(
                f"stage with tracker={name:<8} {med:7.2f}s  ({med / base - 1:+.1%} vs "
                f"{args.trackers.split(',')[0]})"
            )


if __name__ == "__main__":
    main()

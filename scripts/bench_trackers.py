"""What logging costs: the stage with tracker=none vs mlflow (sqlite) vs wandb (offline).

    python scripts/bench_trackers.py                       # resnet/digits, default checks
    python scripts/bench_trackers.py --model mlp --repeats 5

For each repeat, the same stage runs once per tracker, in one process, after a warm-up
stage per tracker (imports, the sqlite schema, W&B's service process: one-time costs,
measured separately below). Two numbers per tracker, medians over repeats:
- the stage's wall time (noisy on a busy machine: other processes share the cores);
- the time spent inside the tracker's own calls (start, log_*, set_verdict, finish),
  measured directly, so it does not depend on how noisy the checks' time is.
The overhead is the second over the tracker=none stage time. One-time costs per process:
``import mlflow``/``import wandb`` and creating the MLflow schema, each in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trackcheck.cli import build_data, build_model_factories, register_configs
from trackcheck.runner import run
from trackcheck.trackers import NoTracker, Tracker


class TimedTracker:
    """Delegates every call to ``inner`` and adds up the seconds spent inside them."""

    def __init__(self, inner: Tracker) -> None:
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


def make(name: str, work: Path) -> Tracker:
    if name == "mlflow":
        from trackcheck.trackers.mlflow import MLflowTracker

        return MLflowTracker(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    if name == "wandb":
        from trackcheck.trackers.wandb import WandbTracker

        return WandbTracker(project="trackcheck-bench", mode="offline", dir=str(work))
    return NoTracker()


def stage(cfg: Any, tracker: Tracker, out: Path) -> None:
    data = build_data(cfg)
    factory, bigger = build_model_factories(cfg, data)
    run(
        factory,
        data,
        checks=list(cfg.checks.run),
        params={n: OmegaConf.to_object(cfg.checks[n]) for n in cfg.checks if n != "run"},
        optimizer=instantiate(cfg.optim),
        device=cfg.device,
        seed=cfg.seed,
        tracker=tracker,
        output_dir=out,
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        bigger_model=bigger,
        run_name="bench",
        progress=False,
    )


def fresh_process_seconds(code: str, cwd: Path) -> float:
    """Wall time of ``code`` in a new interpreter, minus the interpreter's own start."""

    def wall(c: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", c], cwd=cwd, check=True, capture_output=True)
        return time.perf_counter() - t0

    return wall(code) - wall("pass")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. checks=fast")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    register_configs()
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"+model={args.model}", *args.overrides])
    names = ["none", "mlflow", "wandb"]
    with tempfile.TemporaryDirectory(prefix="bench-trackers-") as d:
        work = Path(d)
        one_time = {
            "import mlflow": fresh_process_seconds("import mlflow", work),
            "import wandb": fresh_process_seconds("import wandb", work),
            "MLflow sqlite schema (first run in a folder)": fresh_process_seconds(
                "import mlflow; mlflow.MlflowClient('sqlite:///schema.db').search_experiments()",
                work,
            )
            - fresh_process_seconds("import mlflow", work),
        }
        for name in names:  # warm-up: imports, schema, W&B service, torch thread pools
            stage(cfg, make(name, work), work / f"warm-{name}")
        wall: dict[str, list[float]] = {n: [] for n in names}
        inside: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.repeats):
            for name in names:
                timed = TimedTracker(make(name, work))
                t0 = time.perf_counter()
                stage(cfg, timed, work / f"{name}-{i}")  # type: ignore[arg-type]
                wall[name].append(time.perf_counter() - t0)
                inside[name].append(timed.seconds)
    base = statistics.median(wall["none"])
    print(f"{args.model} {' '.join(args.overrides)}: {args.repeats} repeats, medians")
    print(f"{'tracker':<8}{'stage s':>9}{'vs none':>9}{'in tracker s':>14}{'overhead':>10}")
    for name in names:
        w, t = statistics.median(wall[name]), statistics.median(inside[name])
        print(f"{name:<8}{w:9.2f}{w / base - 1:+9.1%}{t:14.3f}{t / base:10.1%}")
    print("one-time, per process (fresh interpreter):")
    for what, s in one_time.items():
        print(f"  {what:<46}{s:6.2f}s")


if __name__ == "__main__":
    main()

"""Benchmark the pre-training stage: what each check costs, in passes and in time outside them.

    python scripts/bench.py                                  # the four models, default checks
    python scripts/bench.py --models resnet --repeats 5
    python scripts/bench.py --checks fast                    # the fast selection (or all)
    python scripts/bench.py --models resnet --trackers none,mlflow,wandb   # logging cost

Models: ``resnet`` (digits), ``mlp`` (breast_cancer), ``gpt`` (the text corpus), and
``hf-gpt2``, a Hugging Face GPT2LMHeadModel of realistic width (n_embd 256, 4 layers, 4
heads; random init from a config, nothing downloaded) on the same text, so a reader sees how
the cost grows with the model. Each model runs in its own process (its peak memory is its
own), one warm-up stage first (thread pools, kernel caches, the figure worker), then
``--repeats`` stages; times are medians, and every ratio is taken within one run. "1st s"
is the warm-up stage: what the first stage in a process pays on top (torch's first
optimizer, lazy imports, the figure worker's start-up). ``--startup`` splits one-off
``python -m trackcheck`` runs (one check, then the default checks) by their trackcheck.log
into start-up to the first check, the checks, the figures and reports after the verdict,
and the exit.

"stage" is the wall time of ``trackcheck.run`` (validation, the checks, the figures, the
reports; the data and the model config are built before). "model" is the time inside the
model: the root module's forward, the backward passes (torch.func's VJPs included) and the
optimizer step of each training step. "outside" is everything else: data loading, the
checks' own arithmetic, figures still being drawn when the checks end, reports, logging.
"peak RSS" is the process's maximum resident memory (``ru_maxrss``) and its growth over the
process before the first stage (torch, data and the model imported); the figure worker's is
counted separately. Timings on a busy machine are noisy: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODELS = ("resnet", "mlp", "gpt", "hf-gpt2")
SHIPPED = {"resnet": "resnet", "mlp": "mlp", "gpt": "gpt", "hf-gpt2": "gpt"}  # Hydra model


def compose_cfg(model: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    from trackcheck.cli import register_configs

    register_configs()
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        return compose("config", overrides=[f"+model={SHIPPED[model]}", *overrides])


def hf_gpt2(vocab: int, seq_len: int, n_embd: int = 256, n_layer: int = 4) -> Callable[[], Any]:
    """A factory of a randomly initialised Hugging Face GPT-2 of the given width."""

    def build() -> Any:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            vocab_size=vocab, n_positions=seq_len, n_embd=n_embd, n_layer=n_layer, n_head=4
        )
        return GPT2LMHeadModel(cfg)

    return build


def factories(model: str, cfg: Any, data: Any) -> tuple[Callable[[], Any], Any]:
    from trackcheck.cli import build_model_factories

    if model != "hf-gpt2":
        return build_model_factories(cfg, data)
    vocab, seq_len = int(cfg.data.num_outputs), int(cfg.data.seq_len)
    return hf_gpt2(vocab, seq_len), hf_gpt2(vocab, seq_len, n_embd=384)


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


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker_rss_mb() -> float:
    """The figure worker's peak resident memory (VmHWM), 0 when there is none."""
    from trackcheck import render

    w = render._worker
    if w is None or w.proc.poll() is not None:
        return 0.0
    for line in Path(f"/proc/{w.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(model: str, checks: str, repeats: int, trackers: list[str], extra: list[str]) -> dict:
    """One model's stages in this process: per-check medians, stage times per tracker, RSS."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from trackcheck.cli import build_data, build_pipeline
    from trackcheck.runner import run

    selection = ["checks=default", "checks.run=[all]"] if checks == "all" else [f"checks={checks}"]
    cfg = compose_cfg(model, [*selection, *extra])
    data = build_data(cfg)
    factory, bigger = factories(model, cfg, data)
    n_params = sum(p.numel() for p in factory().parameters())
    params = {n: OmegaConf.to_object(cfg.checks[n]) for n in cfg.checks if n != "run"}
    before = rss_mb()

    def stage(tracker: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        report = run(
            factory,
            data,
            checks=list(cfg.checks.run),
            params=params,
            optimizer=instantiate(cfg.optim),
            pipeline=build_pipeline(cfg),  # loss=..., step=... overrides reach the benchmark
            device=cfg.device,
            seed=cfg.seed,
            tracker=tracker,
            output_dir=tempfile.mkdtemp(prefix="trackcheck-bench-"),
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            bigger_model=bigger,
            progress=False,
        )
        return time.perf_counter() - t0, report

    # warm-up: thread pools, allocator, kernel selection, lazy imports (scipy.stats), the
    # figure worker; its time is what a one-off `python -m trackcheck` stage costs
    first_s = stage(None)[0]
    totals: dict[str, list[float]] = {}
    rows: dict[str, list[Any]] = {}
    shared: dict[str, list[dict[str, float]]] = {}
    model_s: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeats):
            for name in trackers:
                wall, report = stage(make_tracker(name, Path(d)))
                totals.setdefault(name, []).append(wall)
                if name == trackers[0]:
                    model_s.append(
                        sum(c.model_s for c in report.checks)
                        + sum(v["model_s"] for v in report.shared.values())
                    )
                    for c in report.checks:
                        rows.setdefault(c.name, []).append(c)
                    for row, v in report.shared.items():  # work shared by several checks
                        shared.setdefault(row, []).append(v)
    checks_out = [
        {
            "name": name,
            "status": runs[-1].status.value,
            "time_s": statistics.median(c.duration_s for c in runs),
            "model_s": statistics.median(c.model_s for c in runs),
            "fwd": runs[-1].n_forward,
            "bwd": runs[-1].n_backward,
        }
        for name, runs in rows.items()
    ]
    checks_out += [  # its own row: in no check's count (trackcheck/checks/_shared/_run.py)
        {
            "name": f"[{name}]",
            "status": f"{int(runs[-1]['steps'])}st",
            "time_s": statistics.median(r["time_s"] for r in runs),
            "model_s": statistics.median(r["model_s"] for r in runs),
            "fwd": int(runs[-1]["fwd"]),
            "bwd": int(runs[-1]["bwd"]),
        }
        for name, runs in shared.items()
    ]
    stages = totals[trackers[0]]
    # the outside share of each stage, then its median: a ratio within one run
    shares = [(s - m) / s for s, m in zip(stages, model_s, strict=True)]
    return {
        "model": model,
        "data": str(cfg.data._target_).rsplit(".", 1)[-1],
        "params": n_params,
        "device": "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu",
        "threads": torch.get_num_threads(),
        "checks": checks_out,
        "first_stage_s": first_s,
        "stage_s": {k: statistics.median(v) for k, v in totals.items()},
        "model_s": statistics.median(model_s),
        "shared_rows": sorted(shared),
        "outside_share": statistics.median(shares),
        "rss_before_mb": before,
        "rss_peak_mb": rss_mb(),
        "worker_rss_mb": worker_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else None,
    }


def print_model(r: dict) -> None:
    print(
        f"\n{r['model']}/{r['data']} ({r['params'] / 1e6:.2f}M params, {r['device']}, "
        f"{r['threads']} threads), medians:"
    )
    print(
        f"{'check':<24}{'status':<7}{'time s':>8}{'model s':>9}{'outside':>9}"
        f"{'fwd':>6}{'bwd':>6}{'ms/pass':>9}"
    )
    for c in r["checks"]:
        t, m, n = c["time_s"], c["model_s"], c["fwd"] + c["bwd"]
        per = f"{1000 * m / n:9.2f}" if n else f"{'-':>9}"
        out = f"{(t - m) / t:9.0%}" if t > 0 else f"{'-':>9}"
        print(
            f"{c['name']:<24}{c['status']:<7}{t:8.2f}{m:9.2f}{out}{c['fwd']:6d}{c['bwd']:6d}{per}"
        )
    t = sum(c["time_s"] for c in r["checks"])
    m = sum(c["model_s"] for c in r["checks"])
    fwd, bwd = sum(c["fwd"] for c in r["checks"]), sum(c["bwd"] for c in r["checks"])
    print(f"{'checks total':<31}{t:8.2f}{m:9.2f}{(t - m) / t:9.0%}{fwd:6d}{bwd:6d}")
    print(f"stage passes: {fwd + bwd} (rows in [brackets]: work shared by several checks)")
    base = next(iter(r["stage_s"]))
    for name, s in r["stage_s"].items():
        print(f"stage with tracker={name:<8}{s:7.2f}s ({s / r['stage_s'][base] - 1:+.1%})")
    print(
        f"first stage in this process: {r['first_stage_s']:.2f}s (torch's first optimizer, "
        "lazy imports, the figure worker starting beside it; --startup times the CLI)"
    )
    cuda = f", CUDA peak {r['cuda_peak_mb']:.0f} MB" if r["cuda_peak_mb"] is not None else ""
    print(
        f"outside the model: {r['outside_share']:.1%} of the stage (tracker={base}); peak RSS "
        f"{r['rss_peak_mb']:.0f} MB (+{r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB over the "
        f"process before the first stage), figure worker {r['worker_rss_mb']:.0f} MB{cuda}"
    )


def print_summary(results: list[dict]) -> None:
    print(
        f"\n{'model':<22}{'params':>8}{'stage s':>9}{'model s':>9}{'outside':>9}"
        f"{'passes':>8}{'ms/pass':>9}{'RSS MB':>8}{'1st s':>7}"
    )
    for r in results:
        n = sum(c["fwd"] + c["bwd"] for c in r["checks"])
        s = next(iter(r["stage_s"].values()))
        print(
            f"{r['model'] + '/' + r['data']:<22}{r['params'] / 1e6:7.2f}M{s:9.2f}"
            f"{r['model_s']:9.2f}{r['outside_share']:9.1%}{n:8d}"
            f"{1000 * r['model_s'] / max(n, 1):9.2f}{r['rss_peak_mb']:8.0f}"
            f"{r['first_stage_s']:7.2f}"
        )


def cli_phases(model: str, *overrides: str) -> dict[str, float]:
    """One `python -m trackcheck` run, split by its trackcheck.log's timestamps into
    start-up (process start to the first check), checks, figures and reports (the verdict
    to the report written: what the figures still being drawn hold up), and exit."""
    import datetime
    import re

    def stamp(line: str) -> float:
        when = line[1 : line.index("]")]
        return datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "trackcheck", f"+model={model}", "tracker=none"]
        t0 = time.time()
        subprocess.run(
            [*cmd, "progress=false", f"hydra.run.dir={d}", *overrides],
            cwd=d,
            check=True,
            capture_output=True,
        )
        t1 = time.time()
        lines = Path(d, "trackcheck.log").read_text().splitlines()
    at = {
        key: stamp(next(ln for ln in lines if re.search(rf"\] - {key}", ln)))
        for key in ("tracker:", "stage (passed|failed)", "report:")
    }
    first, verdict, written = at["tracker:"], at["stage (passed|failed)"], at["report:"]
    return {
        "start-up": first - t0,
        "checks": verdict - first,
        "figures+reports": written - verdict,
        "exit": t1 - written,
        "wall": t1 - t0,
    }


TORCH_ALONE = "import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])"


def torch_alone_s() -> float:
    """Wall time of a process that imports torch and builds its first optimizer: the floor
    any training script pays before its first step."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", TORCH_ALONE], check=True)
    return time.perf_counter() - t0


def print_startup(model: str, repeats: int) -> None:
    for what, overrides in (("one check", ["checks.run=[loss_at_init]"]), ("default", [])):
        ph = cli_phases(model, *overrides)
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in ph.items())
        print(f"`python -m trackcheck +model={model}`, {what}: {parts}")
    # trackcheck's own start-up (Hydra, the CLI, the schema, data and model config) on top
    # of torch's: interleaved runs, medians, one machine, one run of this script
    alone, ours = [], []
    for _ in range(max(repeats, 3)):
        alone.append(torch_alone_s())
        ours.append(cli_phases(model, "checks.run=[loss_at_init]")["start-up"])
    a, o = statistics.median(alone), statistics.median(ours)
    print(
        f'start-up to the first check {o:.2f}s vs `python -c "{TORCH_ALONE}"` {a:.2f}s '
        f"(medians of {len(alone)}, interleaved): trackcheck's own start-up {o - a:+.2f}s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    ap.add_argument("--checks", default="default", choices=["fast", "default", "all"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trackers", default="none", help="comma list: none,mlflow,wandb")
    ap.add_argument("--startup", action="store_true", help="also time `python -m trackcheck`")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one model, JSON out
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. device=cpu")
    args = ap.parse_args()
    trackers = args.trackers.split(",")
    if args.one:
        r = measure(args.one, args.checks, args.repeats, trackers, args.overrides)
        print("BENCH " + json.dumps(r))
        return

    import torch

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores "
        f"{len(os.sched_getaffinity(0))}, device {'cuda' if torch.cuda.is_available() else 'cpu'}"
        f", checks={args.checks}, {args.repeats} repeats"
    )
    if args.startup:
        print_startup("resnet", args.repeats)
    results = []
    for model in filter(None, args.models.split(",")):  # --models "" --startup: start-up only
        if model not in MODELS:
            raise SystemExit(f"unknown model {model!r}: one of {MODELS}")
        cmd = [sys.executable, __file__, "--one", model, "--checks", args.checks]
        cmd += ["--repeats", str(args.repeats), "--trackers", args.trackers, *args.overrides]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if done.returncode or line is None:
            print(f"\n{model}: failed\n{done.stderr[-3000:]}")
            continue
        results.append(json.loads(line[len("BENCH ") :]))
        print_model(results[-1])
    print_summary(results)


if __name__ == "__main__":
    main()

"""Parallel jobs with and without trackcheck's per-job thread count, in one run.

A 4-job joblib sweep (``hydra/launcher=joblib hydra.launcher.n_jobs=4``) of the fast checks
(``checks=fast``) on resnet/digits, once per setting:

- ``threads=auto``: each job its share of the cores (cores // 4, at least 1);
- ``threads=0``: torch's default. Under joblib that is already ``cores // n_jobs``: joblib's
  loky workers get OMP_NUM_THREADS set to it, so this should match ``auto``;
- ``threads=<cores>``: each job a full pool, as processes get that nobody limits (submitit's
  local executor, several sweeps or test runs at once): the oversubscribed case.

Prints each sweep's wall time, the jobs' mean stage time (the checks' own durations from
report.json, without process start-up) and the ratios to ``auto``. The load average is
printed before and after: on a machine busy with other work the numbers say less.

    python scripts/bench_threads.py [--repeats 2] [--jobs 4]
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

from trackcheck.threads import cores


def sweep(setting: str, jobs: int, out: Path) -> tuple[float, float]:
    """(wall time of the sweep, mean of its jobs' stage times), in seconds."""
    lrs = ",".join(f"{(i + 1) * 1e-3:g}" for i in range(jobs))
    cmd = [
        *(sys.executable, "-m", "trackcheck", "-m", "+model=resnet", "data=digits"),
        *("checks=fast", "tracker=none", "progress=false", f"threads={setting}"),
        *("hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"optim.lr={lrs}"),
        f"hydra.sweep.dir={out}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"threads={setting}: the sweep exited {p.returncode}:\n{p.stderr[-3000:]}")
    stages = []
    for report in out.glob("*/report.json"):
        data = json.loads(report.read_text())
        stages.append(sum(c.get("duration_s") or 0.0 for c in data["checks"]))
        threads = data["environment"].get("torch_threads")
    print(f"  threads={setting:>4}: wall {wall:6.1f} s, stage {statistics.mean(stages):5.2f} s "
          f"per job, torch_threads={threads}", flush=True)  # fmt: skip
    return wall, statistics.mean(stages)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="sweeps per setting (median)")
    ap.add_argument("--jobs", type=int, default=4, help="jobs in the sweep = n_jobs")
    args = ap.parse_args()
    n = cores()
    settings = ["auto", "0", str(n)]
    print(f"{args.jobs} joblib jobs on {n} cores; load average {os.getloadavg()}")
    results: dict[str, list[tuple[float, float]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # interleaved: a load change hits every setting
            for s in settings:
                results[s].append(sweep(s, args.jobs, Path(tmp) / f"{s}-{r}"))
    print(f"load average after: {os.getloadavg()}")
    wall = {s: statistics.median(w for w, _ in v) for s, v in results.items()}
    stage = {s: statistics.median(t for _, t in v) for s, v in results.items()}
    for s in settings:
        print(
            f"threads={s:>4}: wall {wall[s]:6.1f} s ({wall[s] / wall['auto']:.2f}x auto), "
            f"stage {stage[s]:5.2f} s per job ({stage[s] / stage['auto']:.2f}x auto)"
        )


if __name__ == "__main__":
    main()

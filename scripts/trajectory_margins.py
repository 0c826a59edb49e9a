"""Measure the shared trajectory judgement's numbers (checks/_shared/_trajectory.py) on correct
models, to set and check its thresholds: per training check, the spike ratio (highest loss /
max(first loss, the prior's loss)), the largest |output| after the run and its bound, the
verdict, and each check's status. Correct models at their default lr and at a high but
workable one (Adam 1e-2 on an MLP, SGD 0.1 with momentum on the ResNet).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/trajectory_margins.py [seeds]
"""

from __future__ import annotations

import sys

import torch

import trackcheck
from trackcheck.checks._shared._trajectory import VERDICTS
from trackcheck.data import breast_cancer, diabetes, digits, text_corpus
from trackcheck.models import GPT, MLP, ResNet

torch.set_num_threads(1)
CHECKS = ["overfit_batch", "output_range", "loss_decreases", "input_independent", "lr_range"]


def cases():  # type: ignore[no-untyped-def]
    bc, dg, db = breast_cancer(), digits(), diabetes()
    tx = text_corpus(seq_len=32, max_chars=40_000)
    adam = lambda lr: lambda ps: torch.optim.Adam(ps, lr=lr)  # noqa: E731
    sgd = lambda lr: lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9)  # noqa: E731
    mlp = lambda shape, k: lambda: MLP(shape, k, width=64, depth=2)  # noqa: E731
    yield "mlp/breast_cancer adam3e-3", mlp([30], 1), bc, adam(3e-3)
    yield "mlp/breast_cancer adam1e-2", mlp([30], 1), bc, adam(1e-2)
    yield "mlp/digits adam1e-2", mlp([1, 8, 8], 10), dg, adam(1e-2)
    yield "mlp/diabetes adam3e-3", mlp([10], 1), db, adam(3e-3)
    yield "mlp/diabetes adam1e-2", mlp([10], 1), db, adam(1e-2)
    res = lambda: ResNet([1, 8, 8], 10, width=16, stages=2)  # noqa: E731
    yield "resnet/digits adam3e-3", res, dg, adam(3e-3)
    yield "resnet/digits sgd0.1m", res, dg, sgd(0.1)
    gpt = lambda: GPT(len(tx.itos), 32, d_model=64, n_head=4, n_layer=2)  # noqa: E731
    yield "gpt/text adam3e-3", gpt, tx, adam(3e-3)


def main() -> None:
    seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
    for name, model, data, opt in cases():
        for seed in seeds:
            r = trackcheck.run(
                model,
                data,
                checks=CHECKS,
                optimizer=opt,
                seed=seed,
                progress=False,
                params={"lr_range": {"when": "always"}},
            )
            for c in r.checks:
                m = c.metrics
                t = m.get("trajectory")
                verdict = VERDICTS[int(t)] if t is not None else "-"
                print(
                    f"{name:28s} s{seed} {c.name:18s} {c.status.value:5s} {verdict:10s} "
                    f"spike {m.get('spike_ratio', float('nan')):7.3g} "
                    f"max|out| {m.get('max_abs_output', float('nan')):9.3g} "
                    + (
                        f"lr {m['configured_lr']:.3g} div {m['divergence_lr']:.3g} "
                        f"steep {m['steepest_lr']:.3g}"
                        if "configured_lr" in m
                        else ""
                    ),
                    flush=True,
                )
                if c.status.value in ("fail", "error"):
                    print("    ", c.message[:300], flush=True)


if __name__ == "__main__":
    main()

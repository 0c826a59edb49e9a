"""The contract check's model probes: trainable parameters, all of them in the optimizer, no
tensor that requires grad feeding the output without being a parameter, and the final op
that made the output (read from its autograd graph, for the output-kind probe)."""

from __future__ import annotations

import re

from torch import Tensor, nn

from trackcheck.checks.contract._contract_findings import Findings
from trackcheck.context import Context


def check_parameters(ctx: Context, model: nn.Module, out: Tensor, f: Findings) -> int:
    """At least one trainable parameter, all of them in the optimizer, and no tensor that
    requires grad feeding the output without being a parameter. Returns the count."""
    named = list(model.named_parameters())
    trainable = [(n, q) for n, q in named if q.requires_grad]
    frozen = [(n, q) for n, q in named if not q.requires_grad]
    f.metrics["trainable_params"] = float(sum(q.numel() for _, q in trainable))
    f.metrics["frozen_params"] = float(sum(q.numel() for _, q in frozen))
    if not trainable:
        f.fail(
            f"no parameter requires grad (all {len(named)} parameter tensors are frozen): "
            "training would stop at PyTorch's 'element 0 of tensors does not require grad'. "
            "Unfreeze what should learn (param.requires_grad_(True), at least the head)"
        )
        return 0
    if frozen:
        f.note(
            f"{len(frozen)} parameter tensors ({int(f.metrics['frozen_params'])} values) are "
            f"frozen, e.g. {_names([n for n, _ in frozen])}: fine for a frozen backbone."
        )
    opt = ctx.optimizer(model)
    in_opt = {id(q) for g in opt.param_groups for q in g["params"]}
    missing = [n for n, q in trainable if id(q) not in in_opt]
    f.metrics["params_not_in_optimizer"] = float(len(missing))
    if missing:
        f.fail(
            f"{len(missing)} of {len(trainable)} trainable parameter tensors are in none of "
            f"the optimizer's param groups: {_names(missing)}; they never change. Build the "
            "optimizer over model.parameters() (the optimizer factory gets them) or add "
            "them to a param group"
        )
    registered = {id(q) for _, q in named}
    stray = [t for t in _graph_leaves(out) if id(t) not in registered]
    f.metrics["unregistered_tensors"] = float(len(stray))
    if stray:
        shapes = ", ".join(str(list(t.shape)) for t in stray[:4])
        f.fail(
            f"{len(stray)} tensors that require grad feed the output but are not parameters "
            f"of the model ({shapes}): model.parameters(), the optimizer, .to(device) and "
            "state_dict() miss them. Hold layers in nn.ModuleList / nn.ModuleDict (not a "
            "Python list or dict) and learnable tensors in nn.Parameter"
        )
    return len(trainable)


def _names(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def _graph_leaves(out: Tensor) -> list[Tensor]:
    """The leaf tensors (requiring grad) the autograd graph of ``out`` accumulates into."""
    leaves: list[Tensor] = []
    seen: set[int] = set()
    stack = [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their leaf
        if isinstance(var, Tensor):
            leaves.append(var)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


_SHAPE_OPS = (
    "View",
    "Reshape",
    "UnsafeView",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Permute",
    "Clone",
    "Select",
    "Slice",
    "Expand",
    "ToCopy",
    "Alias",
)


def final_op(out: Tensor) -> str:
    """The last op that computed ``out``, looking through reshapes ('Softmax', 'Sigmoid',
    'Addmm', ...); '' without a graph (a frozen model)."""
    fn = out.grad_fn
    while fn is not None:
        name = re.sub(r"Backward\d*$", "", type(fn).__name__)
        if not name.startswith(_SHAPE_OPS):
            return name
        fn = next((nxt for nxt, _ in fn.next_functions if nxt is not None), None)
    return ""

"""MLflow for sweeps and the gate: a sweep's parent run, its jobs' arguments, and the
verdicts read back.

A sweep opens one parent run before any job (``open_parent_run``), each job logs a child
run into it (``sweep_job_args``: the MLflowTracker arguments), and the sweep's verdict ends
it (``close_parent_run``). ``read_verdicts`` reads the tags ``MLflowTracker.set_verdict``
wrote, for ``trackcheck.gate``. Re-exported by ``trackers.mlflow``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trackcheck import names
from trackcheck.trackers._mlflow_store import (
    absolute_uri,
    bounded_http,
    check_sqlite_store,
    configured_uri,
    ensure_experiment,
    escape_markdown,
    import_mlflow,
    probe_server,
    safe_uri,
)
from trackcheck.trackers.base import BAD_CHECK, RunVerdict, TrackerError, explain, split_gated

# safe_uri -> the URI with its password, for the parent run this process opened: sweep.json
# and multirun_report.json store only the safe form
_WITH_PASSWORD: dict[str, str] = {}
PARAM_MAX = 6000  # MLflow rejects longer param values


def _real_uri(stored: str) -> str:
    return _WITH_PASSWORD.get(stored, stored)


def open_parent_run(
    node: Mapping[str, Any],
    sweep_id: str,
    sweep_dir: str,
    overrides: Sequence[str] = (),
    swept: Sequence[str] = (),
) -> dict[str, str]:
    """Create the store, the experiment and the sweep's parent run: once, before any job.

    ``overrides``: the sweep's command line (redacted), logged as the parent's params (a
    swept key's value is its sweep, ``1e-4,1e-3``); those of the ``swept`` keys lead its
    name. Returns what the jobs need (``sweep_job_args``) and ``close_parent_run`` reads:
    configured_uri (as the config spells it), tracking_uri (absolute), experiment_id and
    parent_run_id; the URIs without their password (the sweep writes them to files).
    """
    configured = configured_uri(node)
    uri = absolute_uri(configured)
    _WITH_PASSWORD[safe_uri(uri)] = uri
    probe_server(uri)
    check_sqlite_store(uri)
    params = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    leading = [f"{k}={params[k]}" for k in swept if k in params]
    with bounded_http():
        client = import_mlflow().MlflowClient(tracking_uri=uri)  # first use creates the schema
        exp_id = node.get("experiment_id") or ensure_experiment(
            client, str(node.get("experiment_name") or names.DEFAULT_EXPERIMENT)
        )
        tags = {
            names.MLFLOW_RUN_NAME: names.sweep_run_name(sweep_id, leading),
            names.TAG_ROLE: names.ROLE_SWEEP,
            names.TAG_SWEEP_ID: sweep_id,
            names.TAG_SWEEP_DIR: sweep_dir,
        }
        run = client.create_run(str(exp_id), tags=tags)
        if params:
            from mlflow.entities import Param

            rows = [Param(k, v[:PARAM_MAX]) for k, v in params.items()]
            client.log_batch(run.info.run_id, params=rows)
    return {
        "configured_uri": safe_uri(configured),
        "tracking_uri": safe_uri(uri),
        "experiment_id": str(exp_id),
        "parent_run_id": run.info.run_id,
    }


def sweep_job_args(
    node: Mapping[str, Any], sweep_id: str, parent: Mapping[str, str]
) -> dict[str, Any]:
    """A job's MLflowTracker arguments from its sweep's ``open_parent_run``: the parent run,
    experiment id and absolute store, only when the job logs to the store the parent is in
    (a store with a password: the job's own URI, which holds it)."""
    configured = configured_uri(node)
    if safe_uri(configured) != parent["configured_uri"]:
        return {}
    has_password = safe_uri(configured) != configured
    return {
        "tracking_uri": absolute_uri(configured) if has_password else parent["tracking_uri"],
        "experiment_id": node.get("experiment_id") or parent["experiment_id"],
        "parent_run_id": parent["parent_run_id"],
        "tags": {**(node.get("tags") or {}), names.TAG_SWEEP_ID: sweep_id},
    }


def sweep_description(summary: Any, experiment_id: str) -> str:
    """The parent run's description (Markdown): the verdict and the failed-job count, then a
    table of the jobs: run (a link to its page), overrides, verdict, failed checks."""
    jobs = summary.jobs
    bad = [j for j in jobs if not j.passed]
    verdict = names.PASSED if summary.passed else names.FAILED
    lines = [f"**trackcheck sweep: {verdict.upper()}** ({len(bad)} of {len(jobs)} jobs failed)"]
    lines += ["", "| job | run | overrides | verdict | failed checks |", "|---|---|---|---|---|"]
    for j in jobs:
        name = escape_markdown(j.run_name or j.run_id or "")
        run = f"[{name}](#/experiments/{experiment_id}/runs/{j.run_id})" if j.run_id else name
        why = ", ".join(j.failed_checks) or (j.message if not j.passed else "")
        cells = [str(j.num), run, escape_markdown(" ".join(j.overrides)), j.status]
        lines.append("| " + " | ".join([*cells, escape_markdown(why[:200])]) + " |")
    return "\n".join(lines)


def close_parent_run(parent: Mapping[str, str], summary: Any, report: Path) -> None:
    """The sweep's verdict on its parent run (``summary``: a ``sweep.SweepSummary``): the
    ``trackcheck.status`` tag its jobs carry too, how many jobs failed (a tag, ``1 of 3``,
    and a metric per status), the jobs' table as its description, the summary file; then
    the run ends FINISHED (the sweep passed) or FAILED."""
    client = import_mlflow().MlflowClient(tracking_uri=_real_uri(parent["tracking_uri"]))
    run_id = parent["parent_run_id"]
    n_bad = sum(not j.passed for j in summary.jobs)
    with bounded_http():
        for status, n in summary.counts().items():
            client.log_metric(run_id, names.sweep_jobs_key(status), n)
        client.set_tag(run_id, names.TAG_STATUS, names.PASSED if summary.passed else names.FAILED)
        client.set_tag(run_id, names.TAG_FAILED_JOBS, f"{n_bad} of {len(summary.jobs)}")
        note = sweep_description(summary, parent["experiment_id"])
        client.set_tag(run_id, names.MLFLOW_NOTE, note)
        client.log_artifact(run_id, str(report), names.PREFIX)
        end = names.RUN_FINISHED if summary.passed else names.RUN_FAILED
        client.set_terminated(run_id, end)


def _search(client: Any, exp_ids: list[str], filters: Sequence[str]) -> list[Any]:
    """All runs matching every filter (MLflow pages its answers)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            exp_ids, " and ".join(f for f in filters if f), max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _by_check(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``{<check>: value}`` from the tags ``<prefix><check>``."""
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def _verdict(run: Any) -> RunVerdict:
    """One run's verdict from the tags ``set_verdict`` wrote."""
    tags = run.data.tags
    status = tags.get(names.TAG_STATUS)
    name = run.info.run_name or run.info.run_id
    if status is None:  # a child of the sweep that never got a verdict
        return RunVerdict(
            run=name,
            where=run.info.run_id,
            status=names.ERROR if run.info.status != "RUNNING" else names.RUNNING,
            detail=f"no {names.TAG_STATUS} tag; the run is {run.info.status}",
        )
    statuses = _by_check(tags, names.TAG_CHECK_PREFIX)
    gated = [c for c in tags.get(names.TAG_FAILED_CHECKS, "").split(",") if c]
    if not gated:  # older runs: the per-check tags
        gated = [c for c, v in statuses.items() if v in BAD_CHECK]
    failed, warned = split_gated(sorted(gated), statuses)
    messages = _by_check(tags, names.TAG_MESSAGE_PREFIX)
    return RunVerdict(
        run=name,
        where=run.info.run_id,
        status=names.PASSED if status == names.PASSED else names.FAILED,
        failed_checks=failed,
        warned_checks=warned,
        detail=explain(failed + warned, messages) if status != names.PASSED else "",
    )


def _experiment_ids(client: Any, tracking_uri: str, experiment: str | None) -> list[str]:
    exp = client.get_experiment_by_name(experiment or names.DEFAULT_EXPERIMENT)
    if exp is None and experiment and experiment.isdigit():
        exp = client.get_experiment(experiment)
    if exp is None:
        raise TrackerError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    return [exp.experiment_id]


def read_verdicts(
    tracking_uri: str,
    experiment: str | None = None,
    parent_run: str | None = None,
    extra_filter: str = "",
) -> list[RunVerdict]:
    """Runs with a trackcheck verdict in an experiment (by name or id), or a sweep's children.

    In an experiment: the runs whose ``tags.`trackcheck.status``` is passed or failed, but
    for the sweeps' parent runs. Under a parent run: every child, so one without
    the tag (a job that crashed or still runs) counts. TrackerError when there is no such
    experiment or run.
    """
    client = import_mlflow().MlflowClient(tracking_uri=tracking_uri)
    if parent_run:
        try:
            exp_ids = [client.get_run(parent_run).info.experiment_id]
        except Exception as e:  # noqa: BLE001 - MLflow raises its own error types per store
            raise TrackerError(f"no MLflow run {parent_run} in {tracking_uri}: {e}") from e
        scope = f"tags.`{names.MLFLOW_PARENT_RUN}` = '{parent_run}'"
        runs = _search(client, exp_ids, [scope, extra_filter])
    else:
        exp_ids = _experiment_ids(client, tracking_uri, experiment)
        runs = [
            r
            for verdict in (names.PASSED, names.FAILED)
            for r in _search(
                client, exp_ids, [f"tags.`{names.TAG_STATUS}` = '{verdict}'", extra_filter]
            )
        ]
    # a sweep's parent carries the sweep's verdict: the gate counts the jobs' runs only
    runs = [r for r in runs if r.data.tags.get(names.TAG_ROLE) != names.ROLE_SWEEP]
    ordered = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_name or ""))
    return [_verdict(r) for r in ordered]

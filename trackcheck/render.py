"""Draw the checks' figures off the critical path.

A check returns its figures as :class:`trackcheck.plots.Deferred` (data plus a module-level
drawing function). The runner hands each one to a worker process as soon as its check ends,
so matplotlib's layout and PNG encoding run on another core while the next checks train;
before report.html is written the runner waits for them, drawing in-process whatever the
worker has not started yet (work stealing: a short stage never waits for the worker to
import matplotlib). The worker is one per Python process, started once and reused by later
stages (a notebook, a sweep, a test session pay its start-up once), at nice 10 so it only
takes CPU the checks leave idle.

Drawn in-process instead, right after the check as before: stages of fewer than
``WORKER_MIN_CHECKS`` checks (the worker's start-up, importing torch and matplotlib, costs
more CPU than their few figures), single-core machines, ``TRACKCHECK_FIGURE_WORKER=0``,
figures a check drew itself (a matplotlib Figure), and Deferreds the worker cannot import
(a drawing function defined in ``__main__`` or inside a function, unpicklable arguments).
"""

from __future__ import annotations

import atexit
import gc
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackcheck.plots import DPI, Deferred
from trackcheck.redact import first_line
from trackcheck.threads import cores

ENV = "TRACKCHECK_FIGURE_WORKER"  # "0": always in-process, "1": always the worker
# A stage of 1-3 checks draws 0-3 figures (~0.1 s each): the worker's start-up (~2 s of CPU
# importing torch and matplotlib) would cost more than it saves.
WORKER_MIN_CHECKS = 4
# how long the stage waits for the figure the worker is drawing before drawing it here as
# well: about what drawing one takes; longer means the worker is starved of CPU
IN_FLIGHT_WAIT_S = 0.3
# how a drawing function's own failure begins (the figure is a note on its check, see
# Figures.notes); any other failure is writing the PNG, an output failure of the stage
DRAW_FAILED = "could not draw figure"


def figure_path(out: Path, check: str, name: str) -> Path:
    return out / "figures" / check / f"{name}.png"


def save(fig: Any, path: Path) -> str | None:
    """Save a drawn Figure to ``path`` as PNG and free it; None, or why it failed (one line)."""
    import matplotlib.pyplot as plt

    # written to a temporary name and renamed: the worker and this process may both draw a
    # figure the worker was slow to finish, and a reader must never see half a PNG
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # zlib level 1 instead of PIL's 6: PNG encoding 3.8 instead of 5.8 ms a figure for
        # 4% larger files (the default checks' figures, resnet, mlp and gpt: 28 vs 29 KB)
        fig.savefig(tmp, dpi=DPI, pil_kwargs={"compress_level": 1})
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        return f"could not save figure {path}: {e.strerror or e}"
    except Exception as e:  # noqa: BLE001 - matplotlib lays a figure out only when saving it
        tmp.unlink(missing_ok=True)
        return f"{DRAW_FAILED} {path}: {type(e).__name__}: {first_line(e)}"
    finally:
        plt.close(fig)
    return None


@contextmanager
def young_garbage() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block, then collect only its youngest
    generation (unless the program had turned the collector off).

    A drawn figure is ~8k objects in reference cycles (figure, axes and artists point at
    each other). Left to the collector, they outlive a few collections during the drawing
    and reach its oldest generation, and every ~100k such objects trigger a full collection
    of the whole process: 0.4-0.5 s in a stage holding ~400k objects (torch, the model, the
    data), spent in whichever figure was being saved at the time. Collected while still in
    the youngest generation, they cost a few milliseconds."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)


def draw(d: Deferred, path: Path) -> str | None:
    """Draw ``d`` and save it to ``path``; None, or why it failed (one line)."""
    with young_garbage():  # collects once _draw's frame, holding the figure, is gone
        return _draw(d, path)


def _draw(d: Deferred, path: Path) -> str | None:
    try:
        fig = d.draw()
    except Exception as e:  # noqa: BLE001 - a broken drawing function is reported, not raised
        return f"{DRAW_FAILED} {path}: {type(e).__name__}: {first_line(e)}"
    return save(fig, path)


@dataclass
class Job:
    check: str
    name: str
    deferred: Deferred
    path: Path
    payload: bytes  # pickled (deferred, path) for the worker
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    lost: bool = False  # the worker died or could not load it: draw it here


class Worker:
    """The drawing process: length-prefixed pickles in on stdin, pickled replies out on
    stdout, one job in flight at a time (the rest stay in ``jobs``, where the parent can
    steal them)."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
        # the parent's import path: drawing functions of checks defined in tests or plugins
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trackcheck._figure_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.alive = True
        self.thread = threading.Thread(target=self._serve, name="trackcheck-figures", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job: Job | None = None
        try:
            pickle.load(self.proc.stdout)  # "ready": matplotlib and torch are imported
            while True:
                job = self.jobs.get()
                self.proc.stdin.write(struct.pack("<Q", len(job.payload)) + job.payload)
                self.proc.stdin.flush()
                kind, msg = pickle.load(self.proc.stdout)
                job.lost, job.error = kind == "lost", msg
                job.done.set()
                job = None
        except (EOFError, OSError, pickle.UnpicklingError, ValueError):
            self.alive = False
            if job is not None:
                job.lost = True
                job.done.set()

    def usable(self) -> bool:
        return self.alive and self.proc.poll() is None

    def close(self) -> None:
        self.alive = False
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


_worker: Worker | None = None
_lock = threading.Lock()


def shared_worker() -> Worker | None:
    """This process's worker, started on first use (again if it died); None if it cannot."""
    global _worker
    with _lock:
        if _worker is None or not _worker.usable():
            try:
                _worker = Worker()
            except OSError:
                return None
            atexit.register(_worker.close)
        return _worker


def prestart() -> None:
    """Start this process's worker now, when a stage of the default length would draw in it
    (:func:`use_worker`). The CLI calls it first thing: the worker's own start-up (~3 s of
    CPU importing torch, matplotlib and the checks) then runs beside the CLI's, which is
    single-threaded and leaves the other core idle, instead of during the checks, where it
    gets only the CPU they leave and the first figures queue behind it."""
    if use_worker(WORKER_MIN_CHECKS):
        shared_worker()


def use_worker(n_checks: int) -> bool:
    """Whether a stage of ``n_checks`` checks draws in the worker (see the module doc)."""
    flag = os.environ.get(ENV, "")
    if flag in ("0", "1"):
        return flag == "1"
    return n_checks >= WORKER_MIN_CHECKS and cores() >= 2


class Figures:
    """The figures of one stage: handed to the worker as checks end, awaited by ``finish``.

    A figure whose drawing function raises (a shape the figure did not foresee) costs only
    that figure: it becomes a note on its check (``notes``: check -> figure -> why), whose
    verdict stands. Failing to write a PNG is an output failure of the stage, as failing to
    write the report is."""

    def __init__(self, out: Path, worker: bool) -> None:
        self.out = out
        self.worker = shared_worker() if worker else None
        self.jobs: list[Job] = []
        self.local: list[tuple[str, str, Deferred, Path]] = []  # drawn here, at finish
        self.notes: dict[str, dict[str, str]] = {}

    def _failed(self, check: str, name: str, error: str | None) -> str | None:
        """Keep a drawing failure as a note; return any other failure."""
        if error and error.startswith(DRAW_FAILED):
            self.notes.setdefault(check, {})[name] = error
            return None
        return error

    def submit(self, check: str, figures: dict[str, Any]) -> None:
        """Replace each figure in ``figures`` by its PNG path. In-process mode draws now,
        keeps a drawing failure in ``notes`` and raises OutputError when the PNG cannot be
        written; worker mode queues it."""
        from trackcheck.validate import OutputError

        for name, fig in list(figures.items()):
            if isinstance(fig, str | Path):
                continue
            path = figure_path(self.out, check, name)
            figures[name] = str(path)
            if not isinstance(fig, Deferred):  # drawn by the check: only saving is left
                error = save(fig, path)
            elif self.worker is None:
                error = draw(fig, path)
            else:
                self._queue(check, name, fig, path)
                continue
            if error := self._failed(check, name, error):
                raise OutputError(error)

    def _queue(self, check: str, name: str, d: Deferred, path: Path) -> None:
        assert self.worker is not None
        if getattr(d.fn, "__module__", "__main__") == "__main__":
            self.local.append((check, name, d, path))  # the worker cannot import the script
            return
        try:
            payload = pickle.dumps((d, str(path)))
        except Exception:  # noqa: BLE001 - a lambda, a local function, a tensor argument...
            self.local.append((check, name, d, path))
            return
        job = Job(check, name, d, path, payload)
        self.jobs.append(job)
        self.worker.jobs.put(job)

    def finish(self, timeout: float | None = None) -> list[str]:
        """Return once every figure is on disk, drawing here what the worker has not started
        (and the one it is drawing, when that takes longer than ``IN_FLIGHT_WAIT_S``: a
        starved worker never holds the stage up); after ``timeout`` seconds stop (the rest
        stay missing). Returns the PNGs that could not be written, one line each; figures
        that could not be drawn go to ``notes``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        errors: list[str] = []

        def here(check: str, name: str, d: Deferred, path: Path) -> None:
            if deadline is None or time.monotonic() < deadline:
                if error := self._failed(check, name, draw(d, path)):
                    errors.append(error)

        for check, name, d, path in self.local:
            here(check, name, d, path)
        if self.worker is not None:
            while True:  # steal the jobs the worker has not taken
                try:
                    job = self.worker.jobs.get_nowait()
                except queue.Empty:
                    break
                here(job.check, job.name, job.deferred, job.path)
                job.done.set()
        for job in self.jobs:  # done, or the one in flight
            if not job.done.wait(IN_FLIGHT_WAIT_S) or job.lost:
                # both may draw it: the last rename wins
                here(job.check, job.name, job.deferred, job.path)
            elif error := self._failed(job.check, job.name, job.error):
                errors.append(error)
        self.jobs, self.local = [], []
        return errors

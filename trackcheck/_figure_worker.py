"""The figure worker's main (``python -m trackcheck._figure_worker``, started by
:mod:`trackcheck.render`): read length-prefixed pickled ``(Deferred, path)`` jobs from stdin,
draw and save each, reply on stdout with a pickled ``(kind, message)``: ``("ok", None)``,
``("error", why)`` (the figure could not be drawn or saved), or ``("lost", why)`` (the job
could not be loaded here: the parent draws it itself). Exits at end of input."""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from pathlib import Path
from typing import BinaryIO


def _read(inp: BinaryIO, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = inp.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        os.nice(10)  # only the CPU the checks leave idle
    except (OSError, AttributeError):  # not allowed, or no os.nice (Windows)
        pass
    reply = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a print() in a drawing function must not corrupt the replies
    inp = sys.stdin.buffer
    import torch  # noqa: F401 - the checks' modules import it when a job is unpickled

    from trackcheck import plots, registry, render

    plots.pyplot()
    registry.all_checks()  # the built-in checks' modules, where their drawing functions live
    pickle.dump("ready", reply)
    reply.flush()
    while True:
        try:
            (n,) = struct.unpack("<Q", _read(inp, 8))
            payload = _read(inp, n)
        except EOFError:
            return
        try:
            deferred, path = pickle.loads(payload)
        except Exception as e:  # noqa: BLE001 - a module only the parent can import
            pickle.dump(("lost", f"{type(e).__name__}: {e}"), reply)
        else:
            error = render.draw(deferred, Path(path))
            pickle.dump(("error", error) if error else ("ok", None), reply)
        reply.flush()


if __name__ == "__main__":
    main()

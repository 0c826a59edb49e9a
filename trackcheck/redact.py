"""Config hygiene before a tracker sees it: secrets redacted, nesting flattened."""

from __future__ import annotations

import re
from typing import Any

# key names that hold credentials: api_key, apiKey, WANDB_API_KEY, token, password, secret, ...
SECRET_KEY = re.compile(r"(api[_-]?key|token|passw(or)?d|secret|credential|private[_-]?key)", re.I)
REDACTED = "***REDACTED***"


def redact(obj: Any) -> Any:
    """A copy of ``obj`` with the value of every secret-looking key replaced."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``; lists keep their index."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}{sep}", sep))
    elif isinstance(obj, list) and obj and any(isinstance(v, dict | list) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}{sep}", sep))
    else:
        out[prefix[: -len(sep)] if prefix else ""] = obj
    return out

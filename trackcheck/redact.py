"""Config hygiene before a tracker sees it: secrets redacted, nesting flattened."""

from __future__ import annotations

import re
from typing import Any

# A key holds a credential when its LAST word names one: api_key, apiKey, WANDB_API_KEY,
# hf_token, token, db_password, client_secret, credentials. Matching whole words, not
# substrings, keeps tokenizer, max_tokens and token_budget readable in the tracker.
SECRET_WORDS = {
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "credential",
    "credentials",
    "apikey",
    "passphrase",
}
SECRET_PAIRS = {("api", "key"), ("secret", "key"), ("private", "key"), ("access", "key")}
# a password inside a URI: postgresql://user:PASSWORD@host/db, https://user:PASSWORD@host
URI_PASSWORD = re.compile(r"(\b[a-z][\w+.-]*://[^:/@\s]+:)([^@\s]+)(@)", re.I)
REDACTED = "***REDACTED***"


def words(key: str) -> list[str]:
    """``WANDB_API_KEY`` -> [wandb, api, key]; ``apiKey`` -> [api, key]; ``hf-token`` -> ..."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [w.lower() for w in re.split(r"[\s_.\-/]+", spaced) if w]


def is_secret_key(key: object) -> bool:
    w = words(str(key))
    return bool(w) and (w[-1] in SECRET_WORDS or tuple(w[-2:]) in SECRET_PAIRS)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` with every secret-looking key's value and URI password replaced."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return URI_PASSWORD.sub(rf"\1{REDACTED}\3", obj)
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

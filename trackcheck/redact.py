"""Config hygiene before anything is written or sent: secrets redacted, nesting flattened.

The rule (docs/trackers.md, "Secrets"):

- a key holds a secret when its name, lower-cased with ``_ - . /`` and spaces removed, ENDS
  with one of ``SECRET_SUFFIXES``: ``ssh_key``, ``dbpassword``, ``PASSWORD``, ``Secret_Key``,
  ``private_key``, ``WANDB_API_KEY``, ``hf_token``, ``client_secret``, ``credentials``.
  ``tokenizer``, ``max_tokens``, ``token_budget`` and ``password_file`` do not end with one
  and stay readable; keys that name a dict key rather than hold one (``target_key``,
  ``mask_key``: ``NOT_SECRET_ENDINGS``) stay readable too;
- the password inside any URI, anywhere (a value, a list item, a message, a command line):
  ``postgresql://user:PASSWORD@host/db``;
- ``key=value`` text whose key is a secret (``+model.api_key=...`` on a command line);
- and then every other occurrence of a value found under a secret key (an interpolation
  that copied it into another field).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***REDACTED***"
SECRET_SUFFIXES = (
    "key",  # api_key, ssh_key, secret_key, private_key, access_key, WANDB_API_KEY
    "token",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "credential",
    "credentials",
)
# "...key" names that say which dict key to read (trackcheck's own pipeline.*_key, data
# loaders' label_key, sort keys), not a credential
NOT_SECRET_ENDINGS = (
    "targetkey",
    "maskkey",
    "outputkey",
    "inputkey",
    "labelkey",
    "imagekey",
    "textkey",
    "sortkey",
    "primarykey",
    "foreignkey",
    "partitionkey",
    "monkey",
    "hockey",
    "turkey",
)
# a password inside a URI: scheme://user:PASSWORD@host; the password may hold '@' (the last
# '@' before the host ends it) but no '/' or whitespace
URI_PASSWORD = re.compile(r"(\b[a-z][\w+.-]*://[^:/@\s]*:)([^/\s]*)(@[^@/\s]*)", re.I)
# key=value in free text (a command line, an override list, a message)
KEY_VALUE = re.compile(r"(?<![\w.])([+~]*[A-Za-z_][\w.\-]*)=([^\s,'\"\]}]+)")
# values found under secret keys are searched for elsewhere when they are strings at least
# this long: a 2-digit "password" would blank every number that contains it
MIN_SECRET_LEN = 6


def _normal(key: str) -> str:
    return re.sub(r"[\s_.\-/]+", "", key).lower()


def is_secret_key(key: object) -> bool:
    """Whether a config key (its last dotted part, for ``model.ssh_key``) names a secret."""
    k = _normal(str(key).rsplit(".", 1)[-1].lstrip("+~"))
    return k.endswith(SECRET_SUFFIXES) and not k.endswith(NOT_SECRET_ENDINGS)


def secret_values(obj: Any) -> set[str]:
    """Every string (long enough to search for) found under a secret key, at any depth."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if is_secret_key(k) and isinstance(v, str):
                if len(v) >= MIN_SECRET_LEN:
                    found.add(v)
            else:
                found |= secret_values(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            found |= secret_values(v)
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URI passwords, ``secret_key=value`` pairs and ``secrets`` replaced."""
    out = URI_PASSWORD.sub(rf"\1{REDACTED}\3", text)
    out = KEY_VALUE.sub(
        lambda m: f"{m.group(1)}={REDACTED}" if is_secret_key(m.group(1)) else m.group(0), out
    )
    for s in sorted(secrets, key=len, reverse=True):  # longest first: no partial leftovers
        out = out.replace(s, REDACTED)
    return out


def redact(obj: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of ``obj`` with every secret-looking key's value, URI password and every other
    occurrence of those values replaced (``secrets``: more values to hide)."""
    found = secret_values(obj) | set(secrets or ())
    return _redact(obj, found)


def _redact(obj: Any, secrets: set[str]) -> Any:
    if isinstance(obj, dict):
        return {
            k: (REDACTED if is_secret_key(k) and v not in (None, "") else _redact(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


def first_line(e: BaseException) -> str:
    """An exception's first message line, redacted (MLflow's and SQLAlchemy's span dozens)."""
    text = str(e).strip()
    return redact_text(text.splitlines()[0]) if text else type(e).__name__


def redact_args(args: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """A command line (or Hydra's override list) with secrets replaced:
    ``+model.ssh_key=abc`` -> ``+model.ssh_key=***REDACTED***``."""
    return [redact_text(a, secrets) for a in args]


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

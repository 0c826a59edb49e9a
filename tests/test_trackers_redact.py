"""Secrets never reach a tracker: what redact() hides and what it must leave readable.

End to end through MLflow and W&B: test_trackers_mlflow.py / test_trackers_wandb.py."""

from __future__ import annotations

import pytest

from trackcheck.redact import REDACTED, flatten, redact


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "WANDB_API_KEY",
        "token",
        "hf_token",
        "db_password",
        "client_secret",
        "secret_key",
        "private_key",
        "credentials",
    ],
)
def test_credential_keys_are_redacted_at_any_depth(key):
    config = {"logger": [{"settings": {key: "s3cr3t"}}]}
    assert redact(config) == {"logger": [{"settings": {key: REDACTED}}]}


@pytest.mark.parametrize("key", ["tokenizer", "max_tokens", "token_budget", "password_file"])
def test_names_that_only_contain_a_secret_word_stay_readable(key):
    assert redact({key: 256}) == {key: 256}


def test_a_password_inside_a_uri_is_redacted_and_the_rest_kept():
    uri = "postgresql://bob:s3cr3t@db.example.com:5432/mlflow"
    assert redact({"tracking_uri": uri}) == {
        "tracking_uri": f"postgresql://bob:{REDACTED}@db.example.com:5432/mlflow"
    }
    assert redact({"tracking_uri": "sqlite:///mlflow.db"}) == {
        "tracking_uri": "sqlite:///mlflow.db"
    }


def test_empty_secrets_stay_empty_so_a_missing_key_is_visible():
    assert redact({"api_key": None, "token": ""}) == {"api_key": None, "token": ""}


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"optim": {"lr": 1e-3}, "model": {"sizes": [{"w": 2}]}}) == {
        "optim.lr": 1e-3,
        "model.sizes.0.w": 2,
    }

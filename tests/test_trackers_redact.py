"""Secrets never reach a tracker: what redact() hides and what it must leave readable.

End to end through MLflow and W&B: test_trackers_mlflow.py / test_trackers_wandb.py."""

from __future__ import annotations

import pytest

from trackcheck.redact import REDACTED, flatten, redact, redact_args, redact_text


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


# --- the rule by key suffix (docs/trackers.md, "Secrets") -------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "ssh_key",
        "dbpassword",
        "PASSWORD",
        "Secret_Key",
        "private_key",
        "db-passwd",
        "pwd",
        "gpg.passphrase",
        "aws_secret",
        "service_credential",
        "apiKey",
        "key",
    ],
)
def test_a_key_ending_in_a_secret_word_is_redacted(key):
    assert redact({"model": {key: "s3cr3t-value"}}) == {"model": {key: REDACTED}}


@pytest.mark.parametrize(
    "key", ["target_key", "mask_key", "output_key", "input_keys", "label_key", "keyboard"]
)
def test_keys_that_name_a_dict_key_stay_readable(key):
    assert redact({key: "labels"}) == {key: "labels"}


def test_a_password_with_an_at_sign_is_redacted_up_to_the_host():
    uri = "postgresql://bob:p@ss@db.example.com:5432/x"
    assert redact_text(uri) == f"postgresql://bob:{REDACTED}@db.example.com:5432/x"


def test_a_uri_without_a_password_is_left_alone():
    for uri in ("http://127.0.0.1:5000/#/experiments/1", "sqlite:///a/b.db", "ssh://git@host"):
        assert redact_text(uri) == uri


def test_a_command_line_loses_its_secrets_and_keeps_the_rest():
    args = [
        "+model=mlp",
        "+model.api_key=sk-123",
        "tracker.tracking_uri=http://u:pw@h:5",
        "optim.lr=0.1",
        "pipeline.target_key=labels",
    ]
    assert redact_args(args) == [
        "+model=mlp",
        f"+model.api_key={REDACTED}",
        f"tracker.tracking_uri=http://u:{REDACTED}@h:5",
        "optim.lr=0.1",
        "pipeline.target_key=labels",
    ]


def test_a_secret_copied_into_another_field_is_redacted_there_too():
    config = {"db": {"password": "hunter2-x"}, "url": "mysql://db/x?pw=hunter2-x", "n": 12}
    assert redact(config) == {
        "db": {"password": REDACTED},
        "url": f"mysql://db/x?pw={REDACTED}",
        "n": 12,
    }


def test_short_secret_values_are_not_searched_for_elsewhere():
    # a 3-character "password" would blank every number containing it
    assert redact({"pwd": "123", "note": "loss 0.123"}) == {"pwd": REDACTED, "note": "loss 0.123"}


def test_an_mlflow_uri_password_never_reaches_the_run_info_report_json_records():
    from trackcheck.trackers.mlflow import MLflowTracker

    tracker = MLflowTracker(tracking_uri="http://alice:pw-123456@mlflow.example.com:5000")
    tracker.experiment_id, tracker.run_id = "1", "abc"
    info = tracker.info()
    assert info["tracking_uri"] == f"http://alice:{REDACTED}@mlflow.example.com:5000"
    assert info["view"].startswith(f"http://alice:{REDACTED}@mlflow.example.com:5000/#/")
    assert "pw-123456" not in str(info)

import pytest

from fraudlib.config import DriftSettings, SettingsError, TrainingBackend
from fraudlib.drift import Correction, TimeMode

BASE = {
    "INCOMING_BUCKET": "in",
    "ARTIFACTS_BUCKET": "art",
    "LOCK_TABLE": "lock",
    "TRAINING_BACKEND": "local",
}


def test_defaults_are_the_documented_rule():
    settings = DriftSettings.from_env(BASE)
    assert settings.drift.p_value_threshold == 0.01
    assert settings.drift.correction is Correction.BONFERRONI
    assert settings.drift.min_statistic == 0.1
    assert settings.drift.min_drifted_features == 1
    assert settings.drift.time_mode is TimeMode.TIME_OF_DAY
    assert settings.backend is TrainingBackend.LOCAL
    assert settings.local is not None and settings.local.command[-1] == "training_job/entrypoint.py"


def test_every_setting_is_read():
    settings = DriftSettings.from_env(
        {
            **BASE,
            "DRIFT_P_VALUE": "0.05",
            "DRIFT_CORRECTION": "benjamini-hochberg",
            "DRIFT_MIN_STATISTIC": "0.2",
            "DRIFT_MIN_FEATURES": "3",
            "DRIFT_TIME_MODE": "raw",
            "MAX_BATCH_ROWS": "10",
            "MAX_BATCH_BYTES": "1000",
            "LOCAL_TRAINING_COMMAND": "python -m train --fast",
        }
    )
    assert settings.drift.correction is Correction.BENJAMINI_HOCHBERG
    assert (settings.drift.p_value_threshold, settings.drift.min_statistic) == (0.05, 0.2)
    assert settings.drift.min_drifted_features == 3
    assert settings.limits.max_rows == 10 and settings.limits.max_bytes == 1000
    assert settings.local is not None and settings.local.command == ("python", "-m", "train", "--fast")


@pytest.mark.parametrize(
    "change,named",
    [
        ({"INCOMING_BUCKET": ""}, "INCOMING_BUCKET"),
        ({"DRIFT_P_VALUE": "often"}, "DRIFT_P_VALUE"),
        ({"DRIFT_CORRECTION": "holm"}, "DRIFT_CORRECTION"),
        ({"MAX_BATCH_ROWS": "1e6x"}, "MAX_BATCH_ROWS"),
        ({"DRIFT_MIN_FEATURES": "0"}, "DRIFT_"),
        ({"TRAINING_BACKEND": "sagemaker"}, "TRAINING_IMAGE_URI"),
        ({"TRAINING_BACKEND": "batch"}, "TRAINING_BACKEND"),
        ({"TRAINING_BACKEND": "docker"}, "TRAINING_IMAGE"),
        ({"TRAINING_BACKEND": "docker", "TRAINING_IMAGE": "t", "TRAINING_DOCKER_MOUNTS": "relative:/x"}, "MOUNTS"),
        ({"TRAINING_BACKEND": "docker", "TRAINING_IMAGE": "t", "TRAINING_DOCKER_MOUNTS": "/only-host"}, "MOUNTS"),
    ],
)
def test_bad_settings_name_the_variable(change, named):
    with pytest.raises(SettingsError, match=named):
        DriftSettings.from_env({**BASE, **change})


def test_sagemaker_settings():
    settings = DriftSettings.from_env(
        {
            **BASE,
            "TRAINING_BACKEND": "sagemaker",
            "TRAINING_IMAGE_URI": "1.dkr.ecr.us-east-1.amazonaws.com/t:1",
            "TRAINING_ROLE_ARN": "arn:aws:iam::1:role/r",
            "TRAINING_USE_SPOT": "true",
            "TRAINING_MAX_RUNTIME_S": "1200",
        }
    )
    assert settings.sagemaker is not None
    assert settings.sagemaker.use_spot and settings.sagemaker.max_runtime_s == 1200
    assert settings.lock_ttl_s == 1200 + 900


def test_docker_settings():
    settings = DriftSettings.from_env(
        {
            **BASE,
            "TRAINING_BACKEND": "docker",
            "TRAINING_IMAGE": "fraud-training:local",
            "TRAINING_DOCKER_MOUNTS": "'/state dir:/state dir' /data:/data:ro",
        }
    )
    assert settings.backend is TrainingBackend.DOCKER
    assert settings.docker is not None
    assert settings.docker.network == "host"
    assert settings.docker.mounts == ("/state dir:/state dir", "/data:/data:ro")

"""Helpers shared by the integration and e2e tests."""

import json
import sys
import time

from fraudlib.layout import CHAMPION_POINTER_KEY, reference_profile_key
from fraudlib.pointer import ChampionPointer
from fraudlib.profile import ReferenceProfile, build_reference_profile
from fraudlib.synthetic import generate_transactions


def sleep_command(seconds: float) -> str:
    """A stand-in training job for launch tests: a real process that runs for a while."""
    return f"{sys.executable} -c 'import time; time.sleep({seconds})'"


def publish_champion(s3, artifacts_bucket: str, model_version: str = "v1") -> ReferenceProfile:
    """Store a reference profile and point the champion pointer at it, as training does."""
    profile = build_reference_profile(
        generate_transactions(20_000, seed=100), model_version=model_version, data_hash="h1"
    )
    s3.put_object(Bucket=artifacts_bucket, Key=reference_profile_key(model_version), Body=profile.to_bytes())
    s3.put_object(
        Bucket=artifacts_bucket,
        Key=CHAMPION_POINTER_KEY,
        Body=ChampionPointer.for_version(model_version, "2026-12-01T00:00:00+00:00").to_json(),
    )
    return profile


def read_json(s3, bucket: str, key: str):
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def list_keys(s3, bucket: str, prefix: str = ""):
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def publish_bundle(s3, artifacts_bucket: str, version: str, files: dict[str, bytes], promote: bool = True) -> None:
    """Put a bundle's files, then (like the training job, last) the champion pointer."""
    for name, data in files.items():
        s3.put_object(Bucket=artifacts_bucket, Key=f"models/{version}/{name}", Body=data)
    if promote:
        s3.put_object(
            Bucket=artifacts_bucket,
            Key=CHAMPION_POINTER_KEY,
            Body=ChampionPointer.for_version(version, "2026-12-03T00:00:00+00:00").to_json(),
        )

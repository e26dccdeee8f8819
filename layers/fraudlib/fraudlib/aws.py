"""The one factory for AWS clients.

boto3 reads ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) itself, so the same
code talks to AWS, to LocalStack, or to the embedded moto server of ``make stack``.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)


def client(service: str, region_name: str | None = None) -> Any:
    """A boto3 client with standard retries, for ``service`` (``"s3"``, ``"sqs"`` ...)."""
    return boto3.session.Session().client(service, region_name=region_name, config=_CLIENT_CONFIG)

"""The one factory for AWS clients.

botocore reads ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``) itself, so the same
code talks to AWS, to LocalStack, or to the embedded moto server of ``make stack``.

Clients come from botocore directly: boto3 would add only its resource layer and s3transfer,
which nothing here uses, and importing them cost the scoring function's cold start about
0.09 s (measured here with ``python -X importtime``).
"""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.config import Config

_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)


def client(service: str, region_name: str | None = None) -> Any:
    """A client with standard retries, for ``service`` (``"s3"``, ``"sqs"`` ...)."""
    return botocore.session.get_session().create_client(service, region_name=region_name, config=_CLIENT_CONFIG)

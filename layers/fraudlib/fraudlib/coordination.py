"""Idempotency and mutual exclusion for training launches, on one DynamoDB table.

Two kinds of item share the table (key ``pk``, TTL attribute ``expires_at``):

* ``batch#<bucket>/<key>#<etag>``: the claim of one batch version. The first delivery of a
  drifted batch claims it; later deliveries (SQS is at-least-once) see the claim and start
  nothing. A claim stuck in ``launching`` (the function died mid-launch) can be re-taken
  after ``claim_timeout_s``.
* ``lock#training``: at most one training job at a time. The lock carries the job id and an
  expiry, so a crashed job cannot block retraining forever.

Conditional writes make both safe under concurrent invocations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

LOCK_KEY = "lock#training"
CLAIM_RETENTION_S = 30 * 24 * 3600
DEFAULT_CLAIM_TIMEOUT_S = 900


class ClaimState(StrEnum):
    LAUNCHING = "launching"
    LAUNCHED = "launched"
    PENDING = "pending"


@dataclass(frozen=True)
class BatchRef:
    """One version of one incoming object."""

    bucket: str
    key: str
    etag: str

    @property
    def batch_id(self) -> str:
        return f"{self.bucket}/{self.key}#{self.etag}"

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class TrainingCoordinator:
    """Batch claims and the training lock.

    Parameters
    ----------
    dynamodb : boto3 DynamoDB client
    table : str
        Table name (key ``pk`` of type S).
    lock_ttl_s : int
        How long a training lock holds before it is considered abandoned, in seconds.
    claim_timeout_s : int
        How long a claim may stay ``launching`` before another delivery may retake it.
    clock : callable returning epoch seconds
    """

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        lock_ttl_s: int,
        claim_timeout_s: int = DEFAULT_CLAIM_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = dynamodb
        self._table = table
        self._lock_ttl_s = lock_ttl_s
        self._claim_timeout_s = claim_timeout_s
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    def claim_batch(self, batch: BatchRef) -> bool:
        """Claim ``batch`` for a launch decision; False when another delivery already has."""
        now = self._now()
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"batch#{batch.batch_id}"},
                    "state": {"S": ClaimState.LAUNCHING.value},
                    "claimed_at": {"N": str(now)},
                    "launching_until": {"N": str(now + self._claim_timeout_s)},
                    "expires_at": {"N": str(now + CLAIM_RETENTION_S)},
                },
                ConditionExpression="attribute_not_exists(pk) OR (#s = :launching AND launching_until < :now)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":launching": {"S": ClaimState.LAUNCHING.value},
                    ":now": {"N": str(now)},
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def settle_claim(self, batch: BatchRef, state: ClaimState, job_id: str | None) -> None:
        """Record how the claim ended (``launched`` with its job, or ``pending``)."""
        self._ddb.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"batch#{batch.batch_id}"}},
            UpdateExpression="SET #s = :state, job_id = :job",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":state": {"S": state.value}, ":job": {"S": job_id or ""}},
        )

    def release_claim(self, batch: BatchRef) -> None:
        """Drop a claim whose launch failed, so that the retried message can launch."""
        self._ddb.delete_item(TableName=self._table, Key={"pk": {"S": f"batch#{batch.batch_id}"}})

    def claim_of(self, batch: BatchRef) -> dict[str, str] | None:
        item = self._ddb.get_item(
            TableName=self._table, Key={"pk": {"S": f"batch#{batch.batch_id}"}}, ConsistentRead=True
        ).get("Item")
        return None if item is None else {name: next(iter(value.values())) for name, value in item.items()}

    def acquire_lock(self, job_id: str) -> bool:
        """Take the training lock for ``job_id``; False while another job holds it."""
        now = self._now()
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": LOCK_KEY},
                    "job_id": {"S": job_id},
                    "acquired_at": {"N": str(now)},
                    "expires_at": {"N": str(now + self._lock_ttl_s)},
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def release_lock(self, job_id: str) -> bool:
        """Release the lock if ``job_id`` still holds it; False if it does not."""
        try:
            self._ddb.delete_item(
                TableName=self._table,
                Key={"pk": {"S": LOCK_KEY}},
                ConditionExpression="job_id = :job",
                ExpressionAttributeValues={":job": {"S": job_id}},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def lock_holder(self) -> dict[str, str] | None:
        """The current lock item (job id, expiry), or None when free or expired."""
        item = self._ddb.get_item(TableName=self._table, Key={"pk": {"S": LOCK_KEY}}, ConsistentRead=True).get("Item")
        if item is None or int(item["expires_at"]["N"]) < self._now():
            return None
        return {"job_id": item["job_id"]["S"], "expires_at": item["expires_at"]["N"]}

"""Plays Lambda's part for an SQS event source: receive, invoke the handler, delete.

As in AWS: a batch of messages becomes one ``{"Records": [...]}`` event of the shape Lambda
delivers; with ``ReportBatchItemFailures`` only the messages the handler reports as failed
stay on the queue; a handler that raises fails the whole batch. Failed messages become
visible again and, after the queue's ``maxReceiveCount``, SQS moves them to the DLQ.

One shortcut, for a fast development loop: instead of waiting out the queue's visibility
timeout (30 minutes in the template), a failed message is made visible again after
``retry_delay_s``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 3008
    timeout_s: int = 300
    aws_request_id: str = ""
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "embedded"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_s * 1000


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's SQS event source delivers for ``messages`` (ReceiveMessage output)."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


class SqsEventSourcePoller:
    """Polls one queue in a thread and invokes ``handler`` like an event source mapping."""

    def __init__(
        self,
        sqs: Any,
        *,
        queue_url: str,
        queue_arn: str,
        region: str,
        handler: Handler,
        function_name: str,
        batch_size: int = 1,
        retry_delay_s: int = 1,
        wait_s: int = 1,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._region = region
        self._handler = handler
        self._function_name = function_name
        self._batch_size = batch_size
        self._retry_delay_s = retry_delay_s
        self._wait_s = wait_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.invocations = 0

    def poll_once(self) -> int:
        """One receive-invoke-settle cycle; returns the number of messages handled."""
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        context = LambdaContext(
            function_name=self._function_name,
            aws_request_id=str(uuid.uuid4()),
            invoked_function_arn=f"arn:aws:lambda:{self._region}:123456789012:function:{self._function_name}",
        )
        self.invocations += 1
        try:
            result = self._handler(sqs_event(messages, self._queue_arn, self._region), context) or {}
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        except Exception:
            log.exception("handler %s raised; the whole batch returns to the queue", self._function_name)
            failed = {message["MessageId"] for message in messages}
        for message in messages:
            if message["MessageId"] in failed:
                self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self._retry_delay_s,
                )
            else:
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                if self._stop.is_set():
                    break
                log.exception("polling %s failed; retrying", self._queue_url)
                self._stop.wait(1.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"poller-{self._function_name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

"""Create the data-path resources that template.yaml declares, on any AWS API endpoint.

Used by ``make stack`` and by the tests, against the embedded moto server or against
whatever ``AWS_ENDPOINT_URL`` names (LocalStack). Every name and setting is read from the
template through :class:`devstack.cfn.ResolvedStack`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from devstack.cfn import ResolvedStack
from fraudlib import aws

log = logging.getLogger(__name__)

_QUEUE_ATTRIBUTES = {
    "VisibilityTimeout": "VisibilityTimeout",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "SqsManagedSseEnabled": "SqsManagedSseEnabled",
}
NOT_EMULATED = (
    "AWS::Serverless::Function",
    "AWS::Serverless::LayerVersion",
    "AWS::CloudWatch::Alarm",
    "AWS::S3::BucketPolicy",
)
"""Declared in the template but not created here: the functions run in-process (the poller
plays Lambda's part), and alarms and TLS-only bucket policies have no effect on an emulator."""


def _queue_attributes(stack: ResolvedStack, logical_id: str) -> dict[str, str]:
    props = stack.resolve(stack.properties(logical_id))
    attributes = {
        attr: str(props[prop]).lower() if isinstance(props[prop], bool) else str(props[prop])
        for prop, attr in _QUEUE_ATTRIBUTES.items()
        if prop in props
    }
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    return attributes


def _create_queues(stack: ResolvedStack, sqs: Any) -> None:
    queues = stack.of_type("AWS::SQS::Queue")
    # Dead-letter queues first: a redrive policy names its target.
    queues.sort(key=lambda q: "RedrivePolicy" in stack.properties(q))
    for logical_id in queues:
        attributes = _queue_attributes(stack, logical_id)
        url = sqs.create_queue(QueueName=stack.physical_name(logical_id), Attributes=attributes)["QueueUrl"]
        stack.queue_urls[logical_id] = url
    for logical_id in stack.of_type("AWS::SQS::QueuePolicy"):
        props = stack.resolve(stack.properties(logical_id))
        for url in props["Queues"]:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(props["PolicyDocument"])})


def _create_bucket(stack: ResolvedStack, s3: Any, logical_id: str) -> None:
    props = stack.resolve(stack.properties(logical_id))
    bucket = props["BucketName"]
    try:
        if stack.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": stack.region})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=props["VersioningConfiguration"])
    if "BucketEncryption" in props:
        s3.put_bucket_encryption(
            Bucket=bucket,
            # CloudFormation says ServerSideEncryptionByDefault where the API says Apply...
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    notifications = props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
    if notifications:
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": item["Queue"],
                        "Events": [item["Event"]],
                        "Filter": {
                            "Key": {
                                "FilterRules": [
                                    {"Name": rule["Name"], "Value": rule["Value"]}
                                    for rule in item["Filter"]["S3Key"]["Rules"]
                                ]
                            }
                        },
                    }
                    for item in notifications
                ]
            },
        )


def _create_table(stack: ResolvedStack, dynamodb: Any, logical_id: str) -> None:
    props = stack.resolve(stack.properties(logical_id))
    try:
        dynamodb.create_table(
            TableName=props["TableName"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=props["TableName"])
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=props["TableName"],
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": ttl["Enabled"]},
        )


def _create_role(stack: ResolvedStack, iam: Any, logical_id: str) -> None:
    props = stack.resolve(stack.properties(logical_id))
    name = stack.physical_name(logical_id)
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
    for policy in props.get("Policies", []):
        iam.put_role_policy(
            RoleName=name,
            PolicyName=policy["PolicyName"],
            PolicyDocument=json.dumps(policy["PolicyDocument"]),
        )


def _create_repository(stack: ResolvedStack, ecr: Any, logical_id: str) -> None:
    try:
        ecr.create_repository(repositoryName=stack.physical_name(logical_id))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "RepositoryAlreadyExistsException":
            raise


def provision(stack: ResolvedStack) -> dict[str, str]:
    """Create the stack's resources (idempotent) and return the template's Outputs.

    Returns
    -------
    dict
        Output name -> value, the same keys as template.yaml's ``Outputs``.
    """
    _create_queues(stack, aws.client("sqs", stack.region))
    s3 = aws.client("s3", stack.region)
    for logical_id in stack.of_type("AWS::S3::Bucket"):
        _create_bucket(stack, s3, logical_id)
    dynamodb = aws.client("dynamodb", stack.region)
    for logical_id in stack.of_type("AWS::DynamoDB::Table"):
        _create_table(stack, dynamodb, logical_id)
    iam = aws.client("iam", stack.region)
    for logical_id in stack.of_type("AWS::IAM::Role"):
        _create_role(stack, iam, logical_id)
    ecr = aws.client("ecr", stack.region)
    for logical_id in stack.of_type("AWS::ECR::Repository"):
        _create_repository(stack, ecr, logical_id)
    skipped = [name for name, spec in stack.resources.items() if spec["Type"] in NOT_EMULATED]
    log.info("provisioned %s; not emulated: %s", stack.stack_name, ", ".join(skipped))
    return stack.outputs()

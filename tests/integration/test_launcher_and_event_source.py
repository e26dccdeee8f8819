"""The SageMaker launch request, as the SageMaker API (moto) accepts and stores it, and the
SQS event source: poison messages end in the DLQ after maxReceiveCount, as in AWS."""

import json

from devstack.poller import SqsEventSourcePoller
from fraudlib import aws
from fraudlib.config import SageMakerSettings
from fraudlib.launcher import SageMakerLauncher, TrainingRequest, new_job_id
from tests.helpers import list_keys

SETTINGS = SageMakerSettings(
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud-detection-training:latest",
    role_arn="arn:aws:iam::123456789012:role/fraud-detection-TrainingRole",
    instance_type="ml.g5.xlarge",
    max_runtime_s=3600,
    use_spot=True,
    volume_size_gb=30,
)


def test_sagemaker_training_job_request_is_well_formed(aws_endpoint):
    from datetime import UTC, datetime

    sagemaker = aws.client("sagemaker")
    request = TrainingRequest(
        job_id=new_job_id(datetime.now(UTC)),
        incoming_bucket="in-bucket",
        artifacts_bucket="art-bucket",
        lock_table="lock-table",
        trigger_uri="s3://in-bucket/incoming/day 2.csv",
        drift_report_uri="s3://art-bucket/reports/drift/day 2.csv.abc.json",
        mlflow_tracking_uri="http://mlflow:5000",
    )
    launcher = SageMakerLauncher(sagemaker, SETTINGS)
    arn = launcher.start(request)
    assert arn.endswith(f":training-job/{request.job_id}")
    job = sagemaker.describe_training_job(TrainingJobName=request.job_id)
    assert job["AlgorithmSpecification"]["TrainingImage"] == SETTINGS.image_uri
    assert job["RoleArn"] == SETTINGS.role_arn
    assert job["HyperParameters"] == {
        "job-id": request.job_id,
        "trigger-uri": "s3://in-bucket/incoming/day 2.csv",
        "drift-report-uri": "s3://art-bucket/reports/drift/day 2.csv.abc.json",
    }
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {
        "base": "s3://art-bucket/datasets/base/",
        "incoming": "s3://in-bucket/incoming/",
    }
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://art-bucket/training-output/"
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["EnableManagedSpotTraining"] is True
    # moto does not keep Environment; the request itself carries it.
    assert launcher.training_job_request(request)["Environment"] == {
        "INCOMING_BUCKET": "in-bucket",
        "ARTIFACTS_BUCKET": "art-bucket",
        "LOCK_TABLE": "lock-table",
        "TRAINING_JOB_ID": request.job_id,
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }


def test_poison_message_ends_in_the_dead_letter_queue(load_drift_handler, resolved_stack, outputs):
    handler = load_drift_handler()
    sqs = aws.client("sqs")
    queue_url = outputs["IncomingQueueUrl"]
    sqs.purge_queue(QueueUrl=queue_url)  # S3's test event, sent when the notification was set
    sqs.send_message(QueueUrl=queue_url, MessageBody="this is not an S3 notification")
    max_receive = resolved_stack.properties("IncomingQueue")["RedrivePolicy"]["maxReceiveCount"]
    poller = SqsEventSourcePoller(
        sqs,
        queue_url=queue_url,
        queue_arn=resolved_stack.get_att("IncomingQueue", "Arn"),
        region="us-east-1",
        handler=handler.lambda_handler,
        function_name="DriftFunction",
        retry_delay_s=0,
    )
    handled = [poller.poll_once() for _ in range(max_receive + 2)]
    assert handled[:max_receive] == [1] * max_receive
    assert handled[max_receive:] == [0, 0]
    dead = sqs.receive_message(QueueUrl=outputs["DeadLetterQueueUrl"], WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in dead] == ["this is not an S3 notification"]


def test_poller_deletes_processed_messages(load_drift_handler, outputs, resolved_stack, s3, incoming_bucket):
    handler = load_drift_handler()
    sqs = aws.client("sqs")
    # The bucket notification, not a hand-made message: upload and let S3 send it.
    from fraudlib.synthetic import generate_transactions, to_csv_bytes

    s3.put_object(Bucket=incoming_bucket, Key="incoming/a b.csv", Body=to_csv_bytes(generate_transactions(100)))
    s3.put_object(Bucket=incoming_bucket, Key="incoming/ignored.txt", Body=b"not a batch")
    poller = SqsEventSourcePoller(
        sqs,
        queue_url=outputs["IncomingQueueUrl"],
        queue_arn=resolved_stack.get_att("IncomingQueue", "Arn"),
        region="us-east-1",
        handler=handler.lambda_handler,
        function_name="DriftFunction",
    )
    total = 0
    for _ in range(5):
        total += poller.poll_once()
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["IncomingQueueUrl"], AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    reports = list_keys(s3, outputs["ArtifactsBucketName"], "reports/drift/")
    assert len(reports) == 1 and reports[0].startswith("reports/drift/a b.csv.")
    body = json.loads(s3.get_object(Bucket=outputs["ArtifactsBucketName"], Key=reports[0])["Body"].read())
    assert body["batch"]["key"] == "incoming/a b.csv"

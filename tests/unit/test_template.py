"""template.yaml is valid for the AWS tools, and wired the way the code expects."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.cfn import ResolvedStack, load_template

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str, *candidates: Path) -> str:
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make setup`")
    return found


def test_cfn_lint_is_clean():
    cfn_lint = _tool("cfn-lint", Path(sys.executable).parent / "cfn-lint")
    result = subprocess.run([cfn_lint, "template.yaml"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _sam(*args: str) -> subprocess.CompletedProcess[str]:
    sam = _tool("sam", ROOT / ".tools/sam/bin/sam")
    return subprocess.run(
        [sam, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
    )


def test_sam_validate_lint_is_clean():
    result = _sam("validate", "--lint", "--template", "template.yaml", "--region", "us-east-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack():
    return ResolvedStack(load_template(), stack_name="fraud-detection")


def test_incoming_csv_and_csv_gz_notify_the_queue(stack):
    notifications = stack.resolve(stack.properties("IncomingBucket"))["NotificationConfiguration"]
    rules = [
        {rule["Name"]: rule["Value"] for rule in item["Filter"]["S3Key"]["Rules"]}
        for item in notifications["QueueConfigurations"]
    ]
    assert rules == [{"prefix": "incoming/", "suffix": ".csv"}, {"prefix": "incoming/", "suffix": ".csv.gz"}]
    queue_arn = stack.get_att("IncomingQueue", "Arn")
    assert all(item["Queue"] == queue_arn for item in notifications["QueueConfigurations"])


def test_queue_has_a_dead_letter_queue(stack):
    redrive = stack.resolve(stack.properties("IncomingQueue"))["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == stack.get_att("IncomingDeadLetterQueue", "Arn")
    assert redrive["maxReceiveCount"] >= 1


def test_drift_function_event_source_reports_partial_failures(stack):
    function = stack.properties("DriftFunction")
    (event,) = function["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert function["Layers"] == [{"Ref": "FraudLibLayer"}]
    assert function["Handler"] == "app.lambda_handler"
    assert (ROOT / function["CodeUri"] / "app.py").exists()


def test_function_environment_names_the_resources(stack):
    env = stack.function_environment("DriftFunction")
    outputs = stack.outputs()
    assert env["INCOMING_BUCKET"] == outputs["IncomingBucketName"]
    assert env["ARTIFACTS_BUCKET"] == outputs["ArtifactsBucketName"]
    assert env["LOCK_TABLE"] == outputs["TrainingLockTableName"]
    assert env["TRAINING_ROLE_ARN"] == outputs["TrainingRoleArn"]


def _statements(stack, logical_id):
    """The policy statements of a function or role, conditions evaluated (resources unresolved)."""
    policies = stack.properties(logical_id).get("Policies", [])
    documents = [p["PolicyDocument"] for p in policies if "PolicyDocument" in p]
    documents += [p for p in policies if "Statement" in p]
    statements = [statement for document in documents for statement in document["Statement"]]
    resolved = []
    for statement in statements:
        chosen = statement
        if "Fn::If" in statement:
            condition, when_true, when_false = statement["Fn::If"]
            chosen = when_true if stack.condition(condition) else when_false
        if chosen != {"Ref": "AWS::NoValue"}:
            resolved.append(chosen)
    return resolved


@pytest.mark.parametrize("encryption", ["S3", "KMS"])
@pytest.mark.parametrize("logical_id", ["DriftFunction", "ScoringFunction", "TrainingRole"])
def test_no_wildcard_actions(logical_id, encryption):
    stack = ResolvedStack(
        load_template(), stack_name="fraud-detection", parameter_overrides={"BucketEncryption": encryption}
    )
    statements = _statements(stack, logical_id)
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
    kms = [s for s in statements if any(a.startswith("kms:") for a in s["Action"])]
    # With KMS each principal may use exactly the stack's key, and only then.
    assert [s["Resource"] for s in kms] == ([{"Fn::GetAtt": ["DataKey", "Arn"]}] if encryption == "KMS" else [])


def test_drift_function_writes_only_its_prefixes(stack):
    puts = [s for s in _statements(stack, "DriftFunction") if "s3:PutObject" in s["Action"]]
    resources = [
        stack.resolve(r) for s in puts for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert sorted(r.split(":::", 1)[1].split("/", 1)[1] for r in resources) == [
        "quarantine/*",
        "records/*",
        "reports/*",
    ]


@pytest.mark.parametrize("logical_id", ["DriftFunction", "ScoringFunction"])
def test_sam_local_env_file_matches_the_template(stack, logical_id):
    """events/env.local.json (for `sam local invoke --config-env local`) must not drift from
    the template: same variables, only the tracing switch added. sam local passes a variable
    only when the template declares it, so the endpoint is the template's own variable, set by
    the LocalEndpointUrl parameter and empty (botocore then ignores it) on AWS."""
    import json

    env_file = json.loads((ROOT / "events" / "env.local.json").read_text())[logical_id]
    expected = stack.function_environment(logical_id)
    declared = stack.template["Globals"]["Function"]["Environment"]["Variables"]
    assert declared["AWS_ENDPOINT_URL"] == {"Ref": "LocalEndpointUrl"}
    assert stack.template["Parameters"]["LocalEndpointUrl"]["Default"] == ""
    # Empty (the default) means unset: left out of the in-process environment.
    assert "AWS_ENDPOINT_URL" not in expected
    assert {k: v for k, v in env_file.items() if k != "POWERTOOLS_TRACE_DISABLED"} == expected


def test_scoring_function_is_an_image_behind_the_api_reading_only_models(stack):
    from devstack.stack import function_code

    function = stack.resources["ScoringFunction"]
    props = function["Properties"]
    assert props["PackageType"] == "Image" and "Runtime" not in props and "Handler" not in props
    dockerfile = ROOT / function["Metadata"]["DockerContext"] / function["Metadata"]["Dockerfile"]
    text = dockerfile.read_text()
    assert text.startswith("#") and "FROM public.ecr.aws/lambda/python:3.11" in text
    assert "torch" not in (ROOT / "functions/scoring/requirements.txt").read_text().lower().replace("no torch", "")
    code_dir, handler = function_code(stack, "ScoringFunction")
    assert (code_dir, handler) == ("functions/scoring", "app.lambda_handler")
    routes = {(e["Properties"]["Path"], e["Properties"]["Method"]) for e in props["Events"].values()}
    assert {("/predict", "post"), ("/health", "get"), ("/openapi.json", "get"), ("/swagger", "get")} <= routes
    assert all(
        e["Type"] == "Api" and e["Properties"]["RestApiId"] == {"Ref": "ScoringApi"} for e in props["Events"].values()
    )
    statements = _statements(stack, "ScoringFunction")
    reads = [stack.resolve(s["Resource"]) for s in statements if s["Action"] == ["s3:GetObject"]]
    assert reads == [f"{stack.get_att('ArtifactsBucket', 'Arn')}/models/*"]
    assert not [s for s in statements if any(a in ("s3:PutObject", "s3:DeleteObject") for a in s["Action"])]
    assert stack.function_environment("ScoringFunction")["ARTIFACTS_BUCKET"] == stack.outputs()["ArtifactsBucketName"]


def test_docker_context_sends_only_what_the_dockerfiles_copy():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") + 1 :][:3] == [
        "!functions/scoring/",
        "!layers/fraudlib/fraudlib/",
        "!layers/fraudlib/requirements.txt",
    ]


LAMBDA_UNZIPPED_LIMIT_BYTES = 262_144_000


def test_layer_builds_within_lambda_limits_and_imports(tmp_path):
    """sam build of the layer (pip needs the package index) fits Lambda's 250 MB limit, and
    the pruned layer still imports on its own, without the development environment."""
    build_dir = tmp_path / "build"
    result = _sam("build", "FraudLibLayer", "--build-dir", str(build_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    layer = build_dir / "FraudLibLayer" / "python"
    size = sum(path.stat().st_size for path in layer.rglob("*") if path.is_file())
    assert size < LAMBDA_UNZIPPED_LIMIT_BYTES, f"layer is {size:,} bytes"
    assert not list(layer.glob("botocore*"))
    probe = (
        "import io, fraudlib.batch, fraudlib.drift, fraudlib.synthetic as s;"
        "b = fraudlib.batch.read_batch(io.BytesIO(s.to_csv_bytes(s.generate_transactions(50))), source='x');"
        "print(b.n_rows)"
    )
    # -S: no site-packages, so only the layer (and the standard library) can be imported.
    imported = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={"PYTHONPATH": str(layer)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "50"


def test_readme_documents_every_parameter_and_function_setting(stack):
    """The README's configuration tables must not fall behind the template."""
    readme = (ROOT / "README.md").read_text()
    names = list(stack.template["Parameters"])
    for logical_id in ("DriftFunction", "ScoringFunction"):
        names += [name for name in stack.function_environment(logical_id) if not name.startswith("POWERTOOLS_")]
    missing = [name for name in names if f"`{name}`" not in readme and f"{name}`" not in readme]
    assert missing == []

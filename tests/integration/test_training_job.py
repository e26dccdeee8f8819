"""The training job through its real entry point, against the emulated S3/DynamoDB and a
real MLflow store: first model, champion gate, failure. Small synthetic data, few epochs."""

import json
import uuid

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from pytorch_tabnet.tab_model import TabNetClassifier

import entrypoint
from devstack.cfn import ResolvedStack, load_template
from devstack.provision import provision
from fraud_training import onnx_export
from fraud_training.calibration import PlattScaling
from fraud_training.onnx_export import PARITY_TOLERANCE, reference_network, torch_probabilities
from fraud_training.tabnet_model import served_network
from fraudlib import aws
from fraudlib.coordination import TrainingCoordinator
from fraudlib.layout import CHAMPION_POINTER_KEY, bundle_key
from fraudlib.model import FraudModel
from fraudlib.profile import ReferenceProfile
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions, to_csv_bytes
from tests.helpers import list_keys, read_json

FAST = ["--preset", "smoke", "--max-epochs", "8", "--patience", "8"]


@pytest.fixture(scope="module")
def trained(aws_endpoint, tmp_path_factory):
    """A stack whose first model was trained from a synthetic CSV."""
    state = tmp_path_factory.mktemp("state")
    stack = ResolvedStack(load_template(), stack_name=f"t{uuid.uuid4().hex[:10]}")
    outputs = provision(stack)
    data = state / "first.csv"
    columns = generate_transactions(10_000, seed=3, fraud_rate=0.03)
    data.write_bytes(to_csv_bytes(columns))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTIFACTS_BUCKET", outputs["ArtifactsBucketName"])
        patch.setenv("LOCK_TABLE", outputs["TrainingLockTableName"])
        patch.setenv("FRAUD_STATE_DIR", str(state))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        rc = entrypoint.main(["--data", str(data), "--job-id", "first", *FAST])
        yield {"rc": rc, "outputs": outputs, "state": state, "columns": columns, "patch": patch}


def _s3():
    return aws.client("s3")


def _pointer_version(outputs) -> str:
    return read_json(_s3(), outputs["ArtifactsBucketName"], CHAMPION_POINTER_KEY)["model_version"]


def _mlflow(state) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")


def test_first_training_publishes_a_complete_bundle_then_the_pointer(trained):
    assert trained["rc"] == 0
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    version = _pointer_version(trained["outputs"])
    assert list_keys(s3, bucket, f"models/{version}/") == [
        bundle_key(version, name)
        for name in (
            "explain.onnx",
            "manifest.json",
            "model.onnx",
            "preprocessing.json",
            "reference_profile.npz",
            "tabnet.zip",
        )
    ]
    assert list_keys(s3, bucket, "datasets/base/") == ["datasets/base/base.csv.gz"]
    manifest = read_json(s3, bucket, bundle_key(version, "manifest.json"))
    assert manifest["gate"]["promoted"] is True and manifest["gate"]["reason"].startswith("first model")
    assert manifest["onnx"]["max_abs_diff"] <= 1e-5
    assert manifest["onnx"]["explain_max_abs_diff"] <= 1e-5
    assert 0.0 < manifest["threshold"] < 1.0
    assert manifest["risk_cutoffs"]["high"] == manifest["threshold"]
    metrics = manifest["metrics"]
    for name in ("roc_auc", "auprc", "precision", "recall", "f1", "precision_at_80_recall", "recall_at_1pct_fpr"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["auprc_ci_low"] <= metrics["auprc"] <= metrics["auprc_ci_high"]
    assert metrics["tp"] + metrics["fn"] == metrics["test_frauds"]
    assert manifest["baseline_lightgbm_metrics"]["auprc"] > 0
    # Calibrated on validation: the served probabilities average about the test fraud rate.
    assert manifest["calibration"]["method"] == "platt" and manifest["calibration"]["slope"] > 0
    assert manifest["calibration"]["log_loss_after"] <= manifest["calibration"]["log_loss_before"]
    assert 0.3 * metrics["fraud_rate"] < metrics["mean_fraud_probability"] < 3 * metrics["fraud_rate"]
    assert manifest["rows"] == 10_000 and manifest["split"] == {
        "mode": "stratified",
        "train": 6000,
        "validation": 2000,
        "test": 2000,
    }
    profile = ReferenceProfile.from_bytes(
        s3.get_object(Bucket=bucket, Key=bundle_key(version, "reference_profile.npz"))["Body"].read()
    )
    assert profile.model_version == version and profile.data_hash == manifest["data_hash"]
    record = read_json(s3, bucket, "records/launches/first.json")
    assert record["status"] == "succeeded" and record["model_version"] == version and record["promoted"] is True


def test_served_onnx_model_equals_the_torch_model(trained, tmp_path):
    """The bundle scored the production way (ONNX Runtime + stored preprocessing) gives the
    probabilities of TabNet's own saved model, on raw transactions."""
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    version = _pointer_version(trained["outputs"])

    def get(name):
        return s3.get_object(Bucket=bucket, Key=bundle_key(version, name))["Body"].read()

    served = FraudModel.from_bundle_files(get("model.onnx"), get("preprocessing.json"), get("manifest.json"))
    zip_path = tmp_path / "tabnet.zip"
    zip_path.write_bytes(get("tabnet.zip"))
    torch_model = TabNetClassifier()
    torch_model.load_model(str(zip_path))
    fresh = generate_transactions(1500, seed=99, fraud_rate=0.03)
    raw = np.column_stack([fresh[name] for name in FEATURE_COLUMNS])
    inputs = served.preprocessor.transform(raw)
    # The saved TabNet network, evaluated by torch in float64 (what the graph was exported
    # from), and in its native float32.
    # The network as the bundle serves it: behind the manifest's Platt scaling.
    manifest = json.loads(get("manifest.json"))
    calibration = PlattScaling.from_record(manifest["calibration"])
    assert calibration is not None and calibration.slope > 0
    exact = torch_probabilities(reference_network(served_network(torch_model.network, manifest["calibration"])), inputs)
    native_classes = torch_model.predict_proba(inputs.astype(np.float32)).astype(np.float64)
    native = calibration.probabilities(np.log(native_classes[:, 1]) - np.log(native_classes[:, 0]))
    served_probabilities = served.predict_proba(raw)
    # An all-float64 graph equals the network to rounding; the faster ones are within the
    # parity tolerance, as their manifest records.
    precision = manifest["onnx"]["precision"]
    assert np.max(np.abs(served_probabilities - exact)) <= (1e-9 if precision == "float64" else PARITY_TOLERANCE)
    assert np.max(np.abs(served_probabilities - native)) <= 1e-4
    assert served.predict_proba(raw[:1]).shape == (1,)


def test_served_graph_is_the_fastest_precision_within_the_parity_tolerance(trained, tmp_path, monkeypatch):
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    version = _pointer_version(trained["outputs"])
    zip_path = tmp_path / "tabnet.zip"
    zip_path.write_bytes(s3.get_object(Bucket=bucket, Key=bundle_key(version, "tabnet.zip"))["Body"].read())
    torch_model = TabNetClassifier()
    torch_model.load_model(str(zip_path))
    network, n_inputs = torch_model.network, torch_model.network.input_dim
    inputs = np.random.default_rng(3).normal(size=(2000, n_inputs))
    exact = torch_probabilities(reference_network(network), inputs)
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", 1.0)  # measure every precision
    measured = {
        precision: onnx_export.check_parity(
            onnx_export.export_onnx(onnx_export.serving_network(network, precision), n_inputs), exact, inputs
        )["max_abs_diff"]
        for precision in onnx_export.PRECISIONS_FASTEST_FIRST
    }
    f32, gates, f64 = (measured[p] for p in onnx_export.PRECISIONS_FASTEST_FIRST)
    assert f64 <= 1e-9 < gates <= PARITY_TOLERANCE and gates < f32  # float32 gates: ~1e-7

    for tolerance, chosen in [
        (PARITY_TOLERANCE, "float32" if f32 <= PARITY_TOLERANCE else "float32-gates"),
        (f32 / 2, "float32-gates"),
        (gates / 2, "float64"),
    ]:
        monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", tolerance)
        graph, parity = onnx_export.export_served_graph(network, n_inputs, inputs)
        assert parity["precision"] == chosen and parity["max_abs_diff"] == measured[chosen]
        assert np.max(np.abs(onnx_export.onnx_probabilities(graph, inputs) - exact)) <= tolerance
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", 0.0)
    with pytest.raises(onnx_export.OnnxParityError):
        onnx_export.export_served_graph(network, n_inputs, inputs)


def test_mlflow_has_the_run_and_the_champion_alias(trained):
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    manifest = read_json(s3, bucket, bundle_key(_pointer_version(trained["outputs"]), "manifest.json"))
    client = _mlflow(trained["state"])
    champion = client.get_model_version_by_alias("fraud-tabnet", "champion")
    assert str(champion.version) == manifest["mlflow"]["version"]
    run = client.get_run(manifest["mlflow"]["run_id"])
    assert run.data.params["n_d"] == "24" and run.data.tags["data_hash"] == manifest["data_hash"]
    assert run.data.metrics["test_auprc"] == pytest.approx(manifest["metrics"]["auprc"])
    assert "baseline_lightgbm_test_auprc" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "val_auprc")) >= 1
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc_pr.png", "plots/confusion_matrix.png", "plots/feature_importance.png"} <= artifacts


def test_gate_keeps_the_champion_when_the_new_model_is_worse(trained):
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    before = _pointer_version(trained["outputs"])
    alias_before = _mlflow(trained["state"]).get_model_version_by_alias("fraud-tabnet", "champion").version
    # A retrain (base dataset from S3) crippled on purpose: one epoch at a negligible rate.
    rc = entrypoint.main(
        ["--job-id", "worse", *FAST, "--max-epochs", "1", "--learning-rate", "1e-9", "--baseline", "false"]
    )
    assert rc == 0
    record = read_json(s3, bucket, "records/launches/worse.json")
    assert record["promoted"] is False and record["gate_reason"].startswith(f"kept champion {before}")
    assert _pointer_version(trained["outputs"]) == before
    assert list_keys(s3, bucket, f"models/{record['model_version']}/")  # bundle kept for the record
    assert _mlflow(trained["state"]).get_model_version_by_alias("fraud-tabnet", "champion").version == alias_before


def test_pretrained_distilled_ensemble_publishes_the_student_and_its_teachers_record(trained):
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    rc = entrypoint.main(
        ["--job-id", "distilled", *FAST, "--ensemble-size", "2", "--distill", "true",
         "--distill-undersample-ratio", "none", "--distill-max-epochs", "5", "--baseline", "false",
         "--pretrain-max-epochs", "2"]
    )  # fmt: skip
    assert rc == 0
    version = read_json(s3, bucket, "records/launches/distilled.json")["model_version"]
    names = {key.rsplit("/", 1)[1] for key in list_keys(s3, bucket, f"models/{version}/")}
    assert {"model.onnx", "explain.onnx", "tabnet.zip", "tabnet-1.zip", "tabnet-student.zip"} <= names
    manifest = read_json(s3, bucket, bundle_key(version, "manifest.json"))
    ensemble = manifest["ensemble"]
    assert ensemble["members"] == 2 and ensemble["distilled"] is True
    assert 1 <= ensemble["student_epochs"] <= 5 and ensemble["student_rows"] == manifest["split"]["train"]
    teacher = ensemble["teacher_metrics"]
    assert 0.0 <= teacher["auprc"] <= 1.0 and teacher["test_frauds"] == manifest["metrics"]["test_frauds"]
    assert manifest["onnx"]["max_abs_diff"] <= 1e-5
    client = _mlflow(trained["state"])
    run = client.get_run(manifest["mlflow"]["run_id"])
    assert run.data.metrics["teacher_test_auprc"] == pytest.approx(teacher["auprc"])
    assert len(client.get_metric_history(run.info.run_id, "student_loss")) == ensemble["student_epochs"]
    # Self-supervised pretraining on every training row (as many as the student's, none left out).
    pretraining = ensemble["pretraining"]
    assert pretraining["rows"] == ensemble["student_rows"] and pretraining["epochs"] == 2
    assert run.data.metrics["pretraining_best_validation_loss"] == pytest.approx(pretraining["best_validation_loss"])


def test_failure_leaves_the_champion_marks_the_record_and_frees_the_lock(trained):
    s3, bucket = _s3(), trained["outputs"]["ArtifactsBucketName"]
    before = _pointer_version(trained["outputs"])
    coordinator = TrainingCoordinator(aws.client("dynamodb"), trained["outputs"]["TrainingLockTableName"], 3600)
    assert coordinator.acquire_lock("doomed")
    rc = entrypoint.main(["--job-id", "doomed", *FAST, "--batch-size", "100000"])
    assert rc == 1
    record = read_json(s3, bucket, "records/launches/doomed.json")
    assert record["status"] == "failed" and "zero batches" in record["error"]
    assert _pointer_version(trained["outputs"]) == before
    assert coordinator.lock_holder() is None


def test_unlabelled_first_data_is_refused(trained, tmp_path):
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_bytes(to_csv_bytes(generate_transactions(500, labelled=False)))
    assert entrypoint.main(["--job-id", "unlabelled", "--data", str(unlabelled), *FAST]) == 1
    record = read_json(_s3(), trained["outputs"]["ArtifactsBucketName"], "records/launches/unlabelled.json")
    assert "has no Class column" in record["error"]
    assert json.dumps(record)

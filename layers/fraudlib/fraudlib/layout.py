"""The S3 key layout, in one place.

Incoming bucket::

    incoming/<name>.csv[.gz]              batches dropped by users (the S3 -> SQS trigger)
    quarantine/<name>.csv[.gz]            a rejected batch, copied whole
    quarantine/<name>.csv[.gz].error.json why it was rejected (line, column, expected)

Artifacts bucket::

    reports/drift/<name>.<etag>.json      one drift report per accepted batch version
    records/batches/<name>.<etag>.json    one record per accepted batch (rows, labelled)
    records/launches/<job id>.json        one record per training launch
    records/pending/<name>.<etag>.json    a drifted batch that arrived while a job ran
    models/<version>/...                  a model bundle (files below), written first
    models/champion.json                  the pointer to the served model, switched last
    datasets/base/base.csv.gz             the first training's data, part of every retrain

A bundle ``models/<version>/``: manifest.json (version, threshold, risk cut-offs, metrics),
model.onnx (the network, for torch-free scoring), explain.onnx (the attention-mask
explanation graph), tabnet.zip (TabNet's own save; an ensemble's further members in
tabnet-1.zip, tabnet-2.zip ...),
preprocessing.json (the fitted input transform), reference_profile.npz (for drift).

``<name>`` is the key below ``incoming/`` (sub-folders kept); ``<etag>`` is the object's
ETag without quotes, so a re-uploaded file gets a report of its own.
"""

INCOMING_PREFIX = "incoming/"
QUARANTINE_PREFIX = "quarantine/"
DRIFT_REPORT_PREFIX = "reports/drift/"
BATCH_RECORD_PREFIX = "records/batches/"
LAUNCH_RECORD_PREFIX = "records/launches/"
PENDING_RECORD_PREFIX = "records/pending/"
MODELS_PREFIX = "models/"
CHAMPION_POINTER_KEY = "models/champion.json"
REFERENCE_PROFILE_FILENAME = "reference_profile.npz"
MANIFEST_FILENAME = "manifest.json"
ONNX_FILENAME = "model.onnx"
EXPLAIN_ONNX_FILENAME = "explain.onnx"
TABNET_FILENAME = "tabnet.zip"
TABNET_STUDENT_FILENAME = "tabnet-student.zip"
"""TabNet's own save of the distilled network (the one served) when the ensemble was distilled."""
PREPROCESSING_FILENAME = "preprocessing.json"
BASE_DATASET_KEY = "datasets/base/base.csv.gz"
BATCH_SUFFIXES = (".csv", ".csv.gz")


def clean_etag(etag: str) -> str:
    """S3 ETags arrive quoted from some APIs and bare from others."""
    return etag.strip('"')


def batch_name(incoming_key: str) -> str:
    """The part of an incoming key below ``incoming/``."""
    if incoming_key.startswith(INCOMING_PREFIX):
        return incoming_key[len(INCOMING_PREFIX) :]
    return incoming_key


def quarantine_key(incoming_key: str) -> str:
    return QUARANTINE_PREFIX + batch_name(incoming_key)


def quarantine_error_key(incoming_key: str) -> str:
    return quarantine_key(incoming_key) + ".error.json"


def drift_report_key(incoming_key: str, etag: str) -> str:
    return f"{DRIFT_REPORT_PREFIX}{batch_name(incoming_key)}.{clean_etag(etag)}.json"


def batch_record_key(incoming_key: str, etag: str) -> str:
    return f"{BATCH_RECORD_PREFIX}{batch_name(incoming_key)}.{clean_etag(etag)}.json"


def pending_record_key(incoming_key: str, etag: str) -> str:
    return f"{PENDING_RECORD_PREFIX}{batch_name(incoming_key)}.{clean_etag(etag)}.json"


def launch_record_key(job_id: str) -> str:
    return f"{LAUNCH_RECORD_PREFIX}{job_id}.json"


def bundle_prefix(model_version: str) -> str:
    return f"{MODELS_PREFIX}{model_version}/"


def reference_profile_key(model_version: str) -> str:
    return bundle_prefix(model_version) + REFERENCE_PROFILE_FILENAME


def bundle_key(model_version: str, filename: str) -> str:
    return bundle_prefix(model_version) + filename


def is_batch_key(key: str) -> bool:
    """Whether an object key is an incoming batch (the trigger's prefix and suffixes)."""
    return key.startswith(INCOMING_PREFIX) and key.lower().endswith(BATCH_SUFFIXES)


def tabnet_member_filename(index: int) -> str:
    """TabNet's own save of ensemble member ``index``: ``tabnet.zip`` for the first (the only
    one of a single model), ``tabnet-<index>.zip`` for the others."""
    return TABNET_FILENAME if index == 0 else f"{TABNET_FILENAME.removesuffix('.zip')}-{index}.zip"

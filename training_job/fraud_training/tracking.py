"""MLflow: one run per training, the model in the registry, the champion alias."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import onnx
from mlflow.tracking import MlflowClient
from sklearn.metrics import precision_recall_curve, roc_curve

log = logging.getLogger(__name__)
EXPERIMENT_NAME = "fraud-detection"
CHAMPION_ALIAS = "champion"


def default_tracking_uri(state_dir: Path) -> str:
    """The embedded default: a SQLite store inside the state directory (``.stack/``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"


def git_commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunTracker:
    """Thin wrapper over the MLflow client calls the job makes."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        mlflow.set_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=location)
        mlflow.set_experiment(EXPERIMENT_NAME)
        self.client = MlflowClient()

    def start(self, run_name: str) -> str:
        run = mlflow.start_run(run_name=run_name)
        return run.info.run_id

    @staticmethod
    def end(status: str = "FINISHED") -> None:
        mlflow.end_run(status=status)

    @staticmethod
    def log_params(params: dict[str, Any]) -> None:
        mlflow.log_params({name: ("none" if value is None else value) for name, value in params.items()})

    @staticmethod
    def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
        numeric = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        mlflow.log_metrics(numeric, step=step)

    @staticmethod
    def log_history(history: list[dict[str, float]]) -> None:
        for epoch, values in enumerate(history):
            mlflow.log_metrics(values, step=epoch)

    @staticmethod
    def set_tags(tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    @staticmethod
    def log_json(document: dict[str, Any], name: str) -> None:
        mlflow.log_dict(document, name)

    @staticmethod
    def log_plots(
        labels: np.ndarray,
        scores: np.ndarray,
        baseline_scores: np.ndarray | None,
        confusion: dict[str, int],
        importances: dict[str, float],
    ) -> None:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for name, values in (("TabNet", scores), ("LightGBM", baseline_scores)):
            if values is None:
                continue
            fpr, tpr, _ = roc_curve(labels, values)
            precision, recall, _ = precision_recall_curve(labels, values)
            axes[0].plot(fpr, tpr, label=name)
            axes[1].plot(recall, precision, label=name)
        axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)", xscale="log")
        axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall (test)")
        for axis in axes:
            axis.legend()
        mlflow.log_figure(figure, "plots/roc_pr.png")
        plt.close(figure)
        figure, axis = plt.subplots(figsize=(4, 4))
        matrix = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
        axis.imshow(matrix, cmap="Blues")
        for (row, col), value in np.ndenumerate(matrix):
            axis.text(col, row, f"{value:,}", ha="center", va="center")
        axis.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["legit", "fraud"],
            yticklabels=["legit", "fraud"],
            xlabel="predicted",
            ylabel="actual",
            title="confusion matrix (test)",
        )
        mlflow.log_figure(figure, "plots/confusion_matrix.png")
        plt.close(figure)
        figure, axis = plt.subplots(figsize=(6, 6))
        ordered = sorted(importances.items(), key=lambda item: item[1])
        axis.barh([name for name, _ in ordered], [value for _, value in ordered])
        axis.set(title="TabNet global feature importance")
        mlflow.log_figure(figure, "plots/feature_importance.png")
        plt.close(figure)

    def register(self, onnx_bytes: bytes, model_name: str) -> str:
        """Log the ONNX network as this run's model and register it; returns the version."""
        info = mlflow.onnx.log_model(onnx.load_from_string(onnx_bytes), name="model", registered_model_name=model_name)
        version = info.registered_model_version
        if version is None:  # older clients return no version; find it through the run
            run_id = mlflow.active_run().info.run_id
            versions = self.client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
            version = max(int(v.version) for v in versions)
        return str(version)

    def set_champion(self, model_name: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)

    def champion_version(self, model_name: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
        except mlflow.exceptions.MlflowException:
            return None


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True)

"""Test metrics, bootstrap intervals and the decision threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from fraud_training.config import ThresholdPolicy

RECALL_FOR_PRECISION = 0.8
FPR_FOR_RECALL = 0.01


def precision_at_recall(labels: np.ndarray, scores: np.ndarray, recall_floor: float = RECALL_FOR_PRECISION) -> float:
    """Best precision among thresholds whose recall is at least ``recall_floor``."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    eligible = precision[recall >= recall_floor]
    return float(eligible.max()) if eligible.size else 0.0


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_ceiling: float = FPR_FOR_RECALL) -> float:
    """Best recall (TPR) among thresholds whose false-positive rate is at most ``fpr_ceiling``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    eligible = tpr[fpr <= fpr_ceiling]
    return float(eligible.max()) if eligible.size else 0.0


def choose_threshold(labels: np.ndarray, scores: np.ndarray, policy: ThresholdPolicy, target_recall: float) -> float:
    """The decision threshold, chosen on validation data.

    ``max_f1``: the threshold of best F1. ``target_recall``: the highest threshold whose
    recall still reaches ``target_recall`` (fewest alerts for that recall).
    """
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if policy is ThresholdPolicy.TARGET_RECALL:
        eligible = np.flatnonzero(recall >= target_recall)
        return float(thresholds[eligible.max()]) if eligible.size else float(thresholds.min())
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def point_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "precision_at_80_recall": precision_at_recall(labels, scores),
        "recall_at_1pct_fpr": recall_at_fpr(labels, scores),
        # What the probabilities mean, beside how they rank: the Brier score and the mean
        # probability against the fraud rate (equal for calibrated scores).
        "brier_score": float(np.mean((np.asarray(scores, dtype=np.float64) - labels) ** 2)),
        "mean_fraud_probability": float(np.mean(scores)),
        "fraud_rate": float(np.mean(labels)),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def bootstrap_intervals(
    labels: np.ndarray, scores: np.ndarray, rounds: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of ROC-AUC and AUPRC over ``rounds`` stratified resamples."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    roc, pr = [], []
    for _ in range(rounds):
        rows = np.concatenate(
            [rng.choice(positives, positives.size, replace=True), rng.choice(negatives, negatives.size, replace=True)]
        )
        roc.append(roc_auc_score(labels[rows], scores[rows]))
        pr.append(average_precision_score(labels[rows], scores[rows]))
    return {
        "roc_auc": (float(np.percentile(roc, 2.5)), float(np.percentile(roc, 97.5))),
        "auprc": (float(np.percentile(pr, 2.5)), float(np.percentile(pr, 97.5))),
    }


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float, rounds: int, seed: int) -> dict[str, Any]:
    """Everything the run logs about one model on the test split."""
    metrics: dict[str, Any] = point_metrics(labels, scores, threshold)
    intervals = bootstrap_intervals(labels, scores, rounds, seed) if rounds > 0 else {}
    for name, (low, high) in intervals.items():
        metrics[f"{name}_ci_low"] = low
        metrics[f"{name}_ci_high"] = high
    metrics["threshold"] = threshold
    metrics["test_rows"] = int(labels.shape[0])
    metrics["test_frauds"] = int(labels.sum())
    return metrics

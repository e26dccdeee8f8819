"""The champion gate: a new model replaces the served one only when it is good enough."""

from __future__ import annotations

from dataclasses import dataclass

from fraud_training.config import TrainingConfig


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    new_auprc: float
    champion_auprc: float | None = None
    champion_version: str | None = None


def decide(
    new_metrics: dict[str, float],
    config: TrainingConfig,
    champion_auprc: float | None = None,
    champion_version: str | None = None,
    compared_on: str = "the same test rows",
) -> GateDecision:
    """Promote when the new AUPRC >= the champion's on the same rows minus the tolerance;
    with no champion, when the absolute floors hold.

    Parameters
    ----------
    new_metrics : the new model's metrics (``auprc`` on the compared rows, ``roc_auc``)
    champion_auprc : the champion's AUPRC on the same rows, or None without a champion
    compared_on : which rows, in words, for the reason
    """
    new_auprc = float(new_metrics["auprc"])
    if champion_auprc is None:
        failed = []
        if new_auprc < config.min_auprc:
            failed.append(f"AUPRC {new_auprc:.4f} < floor {config.min_auprc:g}")
        if new_metrics["roc_auc"] < config.min_roc_auc:
            failed.append(f"ROC-AUC {new_metrics['roc_auc']:.4f} < floor {config.min_roc_auc:g}")
        if failed:
            return GateDecision(False, "first model below the floors: " + "; ".join(failed), new_auprc)
        return GateDecision(
            True,
            f"first model: AUPRC {new_auprc:.4f} >= {config.min_auprc:g} and ROC-AUC"
            f" {new_metrics['roc_auc']:.4f} >= {config.min_roc_auc:g}",
            new_auprc,
        )
    bar = champion_auprc - config.gate_tolerance
    if new_auprc >= bar:
        reason = (
            f"AUPRC {new_auprc:.4f} >= champion {champion_version}'s {champion_auprc:.4f}"
            f" - tolerance {config.gate_tolerance:g}, on {compared_on}"
        )
        return GateDecision(True, reason, new_auprc, champion_auprc, champion_version)
    reason = (
        f"kept champion {champion_version}: new AUPRC {new_auprc:.4f} < its {champion_auprc:.4f}"
        f" - tolerance {config.gate_tolerance:g}, on {compared_on}"
    )
    return GateDecision(False, reason, new_auprc, champion_auprc, champion_version)

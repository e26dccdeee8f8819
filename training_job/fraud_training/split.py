"""Train/validation/test split and random undersampling of the training part only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from imblearn.under_sampling import RandomUnderSampler
from sklearn.model_selection import train_test_split

from fraud_training.config import SplitMode
from fraudlib.schema import FEATURE_COLUMNS, TIME_COLUMN

TRAIN_SHARE, VALIDATION_SHARE = 0.6, 0.2


@dataclass(frozen=True)
class Split:
    """Row indices into the dataset for each part."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def split_rows(features: np.ndarray, labels: np.ndarray, mode: SplitMode, seed: int) -> Split:
    """60/20/20: stratified and seeded (the seed's protocol), or ordered by ``Time``.

    The time-ordered split trains on the past and tests on the future: the honest protocol
    for a stream that drifts.
    """
    n_rows = labels.shape[0]
    if mode is SplitMode.TIME:
        order = np.argsort(features[:, FEATURE_COLUMNS.index(TIME_COLUMN)], kind="stable")
        train_end = round(TRAIN_SHARE * n_rows)
        validation_end = round((TRAIN_SHARE + VALIDATION_SHARE) * n_rows)
        return Split(order[:train_end], order[train_end:validation_end], order[validation_end:])
    rows = np.arange(n_rows)
    train, rest = train_test_split(rows, train_size=TRAIN_SHARE, stratify=labels, random_state=seed)
    validation, test = train_test_split(rest, train_size=0.5, stratify=labels[rest], random_state=seed)
    return Split(np.sort(train), np.sort(validation), np.sort(test))


def undersample(
    features: np.ndarray, labels: np.ndarray, ratio: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random undersampling of the majority class to ``minority / majority = ratio``.

    ``ratio=None`` keeps every row; ``1.0`` is the seed's balanced undersampling. Data whose
    classes are already at least that balanced is kept whole (there is nothing to remove).
    """
    if ratio is None:
        return features, labels
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"undersample_ratio must be in (0, 1] or none, got {ratio}")
    minority, majority = int(labels.sum()), int(labels.size - labels.sum())
    if majority == 0 or minority >= ratio * majority:
        return features, labels
    sampler = RandomUnderSampler(sampling_strategy=ratio, random_state=seed)
    resampled_features, resampled_labels = sampler.fit_resample(features, labels)
    return np.asarray(resampled_features), np.asarray(resampled_labels)

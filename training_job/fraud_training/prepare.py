"""From labelled rows to model-ready arrays: split, fit the preprocessing on the training
part, undersample the training part only. Shared by the job and the quality benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraud_training.config import TrainingConfig
from fraud_training.split import split_rows, undersample
from fraudlib.preprocessing import Preprocessor


@dataclass(frozen=True)
class PreparedData:
    preprocessor: Preprocessor
    raw_train: np.ndarray
    raw_test: np.ndarray
    test_rows: np.ndarray
    """Indices of the test rows in the dataset."""
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "validation": len(self.val_y), "test": len(self.test_y)}


def prepare(features: np.ndarray, labels: np.ndarray, config: TrainingConfig) -> PreparedData:
    split = split_rows(features, labels, config.split, config.seed)
    raw_train = features[split.train]
    preprocessor = Preprocessor.fit(raw_train, config.time_encoding)
    train_x, train_y = undersample(
        preprocessor.transform(raw_train), labels[split.train], config.undersample_ratio, config.seed
    )
    return PreparedData(
        preprocessor=preprocessor,
        raw_train=raw_train,
        raw_test=features[split.test],
        test_rows=split.test,
        train_x=train_x,
        train_y=train_y,
        val_x=preprocessor.transform(features[split.validation]),
        val_y=labels[split.validation],
        test_x=preprocessor.transform(features[split.test]),
        test_y=labels[split.test],
    )

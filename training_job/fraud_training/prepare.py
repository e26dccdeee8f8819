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
    """The training part after undersampling (the first ensemble member's draw)."""
    every_train_x: np.ndarray
    every_train_y: np.ndarray
    """The whole training part, transformed, before undersampling."""
    undersample_ratio: float | None
    seed: int
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y

    def member_training_set(self, member: int) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble member ``member``'s training rows: member 0 gets ``train_x``/``train_y``;
        every other member its own undersampling draw, so that together the members see
        more of the majority class than one draw holds."""
        if member == 0 or self.undersample_ratio is None:
            return self.train_x, self.train_y
        return undersample(self.every_train_x, self.every_train_y, self.undersample_ratio, self.seed + member)

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "validation": len(self.val_y), "test": len(self.test_y)}


def prepare(features: np.ndarray, labels: np.ndarray, config: TrainingConfig) -> PreparedData:
    split = split_rows(features, labels, config.split, config.seed)
    raw_train = features[split.train]
    preprocessor = Preprocessor.fit(raw_train, config.time_encoding)
    every_train_x, every_train_y = preprocessor.transform(raw_train), labels[split.train]
    train_x, train_y = undersample(every_train_x, every_train_y, config.undersample_ratio, config.seed)
    return PreparedData(
        preprocessor=preprocessor,
        raw_train=raw_train,
        raw_test=features[split.test],
        test_rows=split.test,
        train_x=train_x,
        train_y=train_y,
        every_train_x=every_train_x,
        every_train_y=every_train_y,
        undersample_ratio=config.undersample_ratio,
        seed=config.seed,
        val_x=preprocessor.transform(features[split.validation]),
        val_y=labels[split.validation],
        test_x=preprocessor.transform(features[split.test]),
        test_y=labels[split.test],
    )

"""A served model: the ONNX network plus the fitted preprocessing, from one bundle.

The scoring Lambda and the training job's champion gate both score through this class, so
the champion is judged by exactly what production runs. Needs NumPy and onnxruntime only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudlib.preprocessing import Preprocessor

RISK_LEVELS = ("LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class RiskCutoffs:
    """``HIGH`` from ``high`` up (the decision threshold), ``MEDIUM`` from ``medium`` up."""

    medium: float
    high: float

    def level(self, probability: np.ndarray) -> np.ndarray:
        return np.where(probability >= self.high, "HIGH", np.where(probability >= self.medium, "MEDIUM", "LOW"))


class FraudModel:
    """Fraud probabilities from raw transactions (n, 30) in canonical column order."""

    def __init__(self, onnx_bytes: bytes, preprocessor: Preprocessor, manifest: dict[str, Any]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self.preprocessor = preprocessor
        self.manifest = manifest
        self.model_version = str(manifest["model_version"])
        self.threshold = float(manifest["threshold"])
        self.risk = RiskCutoffs(**manifest["risk_cutoffs"])

    @classmethod
    def from_bundle_files(cls, onnx_bytes: bytes, preprocessing_json: bytes, manifest_json: bytes) -> FraudModel:
        return cls(onnx_bytes, Preprocessor.from_dict(json.loads(preprocessing_json)), json.loads(manifest_json))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of fraud per row, float64."""
        inputs = self.preprocessor.transform(features)
        outputs = self._session.run(None, {self._input_name: inputs})
        return np.asarray(outputs[0], dtype=np.float64).reshape(-1)

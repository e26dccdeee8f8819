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
from fraudlib.schema import AMOUNT_COLUMN, TIME_COLUMN

RISK_LEVELS = ("LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class RiskCutoffs:
    """``HIGH`` from ``high`` up (the decision threshold), ``MEDIUM`` from ``medium`` up."""

    medium: float
    high: float

    def level(self, probability: np.ndarray) -> np.ndarray:
        return np.where(probability >= self.high, "HIGH", np.where(probability >= self.medium, "MEDIUM", "LOW"))


class ModelNotExplainableError(RuntimeError):
    """The bundle carries no explanation graph."""


def _session(onnx_bytes: bytes, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # One request at a time per Lambda environment: spinning worker threads only burn CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def raw_column_of(input_name: str) -> str:
    """The raw transaction column an engineered model input comes from."""
    if input_name in ("hour_sin", "hour_cos"):
        return TIME_COLUMN
    if input_name == "log1p_Amount":
        return AMOUNT_COLUMN
    return input_name


class FraudModel:
    """Fraud probabilities (and, when the bundle has the graph, attention-mask explanations)
    from raw transactions (n, 30) in canonical column order."""

    def __init__(
        self,
        onnx_bytes: bytes,
        preprocessor: Preprocessor,
        manifest: dict[str, Any],
        explain_onnx_bytes: bytes | None = None,
        threads: int = 1,
    ) -> None:
        self._session = _session(onnx_bytes, threads)
        self._input_name = self._session.get_inputs()[0].name
        self._explain_session = None if explain_onnx_bytes is None else _session(explain_onnx_bytes, threads)
        self.preprocessor = preprocessor
        self.manifest = manifest
        self.model_version = str(manifest["model_version"])
        self.threshold = float(manifest["threshold"])
        self.risk = RiskCutoffs(**manifest["risk_cutoffs"])
        # Engineered inputs that come from one raw column (hour_sin and hour_cos from Time)
        # are summed, so an explanation names what the caller sent.
        self.explained_columns = tuple(dict.fromkeys(raw_column_of(name) for name in preprocessor.output_names))
        self._input_to_column = np.zeros((preprocessor.n_outputs, len(self.explained_columns)))
        for row, name in enumerate(preprocessor.output_names):
            self._input_to_column[row, self.explained_columns.index(raw_column_of(name))] = 1.0

    @classmethod
    def from_bundle_files(
        cls,
        onnx_bytes: bytes,
        preprocessing_json: bytes,
        manifest_json: bytes,
        explain_onnx_bytes: bytes | None = None,
        threads: int = 1,
    ) -> FraudModel:
        return cls(
            onnx_bytes,
            Preprocessor.from_dict(json.loads(preprocessing_json)),
            json.loads(manifest_json),
            explain_onnx_bytes,
            threads,
        )

    @property
    def explainable(self) -> bool:
        return self._explain_session is not None

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of fraud per row, float64."""
        inputs = self.preprocessor.transform(features)
        outputs = self._session.run(None, {self._input_name: inputs})
        return np.asarray(outputs[0], dtype=np.float64).reshape(-1)

    def feature_shares(self, features: np.ndarray) -> np.ndarray:
        """Per row, each raw column's share of TabNet's attention (rows sum to 1, or 0 when
        no step contributed), shape (n, len(``explained_columns``)).

        Raises
        ------
        ModelNotExplainableError
            When the bundle has no explanation graph.
        """
        if self._explain_session is None:
            raise ModelNotExplainableError(f"model {self.model_version} has no explanation graph")
        inputs = self.preprocessor.transform(features)
        shares = np.asarray(self._explain_session.run(None, {self._input_name: inputs})[0], dtype=np.float64)
        return shares @ self._input_to_column

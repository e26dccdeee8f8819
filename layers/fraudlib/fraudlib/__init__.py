"""Shared library of the fraud-detection service.

Core modules (``schema``, ``features``, ``batch``, ``profile``, ``drift``, ``report``,
``synthetic``, ``layout``, ``config``, ``preprocessing``) are pure Python + NumPy/SciPy/pandas
and import no AWS SDK; ``model`` adds ONNX Runtime (scoring and the champion gate).
AWS access lives in ``aws``, ``store``, ``coordination`` and ``launcher``; ``ingest`` wires
the drift use case together behind those interfaces.
"""

__version__ = "0.1.0"

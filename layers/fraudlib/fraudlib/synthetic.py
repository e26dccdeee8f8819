"""Synthetic transactions shaped like the ULB credit-card data, for tests, CI and demos.

Not a model of real fraud: a stand-in with the same columns, similar scales (PCA components
with falling variance, a log-normal Amount, a day/night rhythm in Time), a rare positive
class with a learnable signal, and a ``shift`` option that moves chosen features so that
drift can be produced on purpose.
"""

from __future__ import annotations

import gzip as gzip_module
import io
from collections.abc import Mapping

import numpy as np

from fraudlib.features import SECONDS_PER_DAY
from fraudlib.schema import AMOUNT_COLUMN, FEATURE_COLUMNS, LABEL_COLUMN, PCA_COLUMNS, TIME_COLUMN

DEFAULT_FRAUD_RATE = 0.002
TWO_DAYS_S = 2 * SECONDS_PER_DAY
PCA_SD = {name: 2.0 * 0.94**i for i, name in enumerate(PCA_COLUMNS)}
"""Standard deviation of each V column (V1 widest, like the real components)."""

FRAUD_SIGNAL_SD = {"V4": 1.8, "V10": -2.0, "V12": -2.2, "V14": -2.8, "V17": -2.0, "V11": 1.5}
"""Mean shift of fraud rows on a few components, in units of the component's sd."""

AMOUNT_LOG_MEAN = 3.0
AMOUNT_LOG_SD = 1.4


def _times_s(rng: np.random.Generator, n_rows: int, start_s: float, duration_s: float) -> np.ndarray:
    # Transactions are rarer at night: accept a uniform draw with a probability that follows
    # the hour of day (lowest around 4 am), like the real data's rhythm.
    times: list[np.ndarray] = []
    needed = n_rows
    while needed > 0:
        draw = rng.uniform(start_s, start_s + duration_s, size=2 * needed + 16)
        hour = np.mod(draw, SECONDS_PER_DAY) / 3600.0
        accept = rng.random(draw.shape[0]) < 0.55 + 0.45 * np.sin((hour - 10.0) * np.pi / 12.0)
        kept = draw[accept][:needed]
        times.append(kept)
        needed -= kept.shape[0]
    # Whole seconds, as in the real data.
    return np.floor(np.sort(np.concatenate(times)))


def generate_transactions(
    n_rows: int,
    *,
    seed: int = 0,
    fraud_rate: float = DEFAULT_FRAUD_RATE,
    shift: Mapping[str, float] | None = None,
    start_time_s: float = 0.0,
    duration_s: float = TWO_DAYS_S,
    labelled: bool = True,
) -> dict[str, np.ndarray]:
    """Make creditcard.csv-shaped transactions.

    Parameters
    ----------
    n_rows : int
        Number of transactions.
    seed : int
        Seed of every random draw.
    fraud_rate : float
        Expected share of ``Class == 1`` rows (the real data: 0.00173).
    shift : mapping of column name to float, optional
        Moves the named feature columns by that many of their standard deviations
        (``Amount``: of its log; ``Time``: by that many hours). The drift knob.
    start_time_s, duration_s : float
        ``Time`` runs over ``[start_time_s, start_time_s + duration_s)`` seconds, sorted.
    labelled : bool
        Include the ``Class`` column.

    Returns
    -------
    dict of str to ndarray
        ``Time``, ``V1``..``V28``, ``Amount`` (float64) and, if labelled, ``Class`` (int8).
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    unknown = set(shift or {}) - set(FEATURE_COLUMNS)
    if unknown:
        raise ValueError(f"cannot shift unknown columns: {', '.join(sorted(unknown))}")
    rng = np.random.default_rng(seed)
    is_fraud = rng.random(n_rows) < fraud_rate
    columns: dict[str, np.ndarray] = {TIME_COLUMN: _times_s(rng, n_rows, start_time_s, duration_s)}
    for name in PCA_COLUMNS:
        values = rng.standard_normal(n_rows)
        values[is_fraud] += FRAUD_SIGNAL_SD.get(name, 0.0) + 0.8 * rng.standard_normal(is_fraud.sum())
        columns[name] = values * PCA_SD[name]
    log_amount = rng.normal(AMOUNT_LOG_MEAN, AMOUNT_LOG_SD, n_rows)
    log_amount[is_fraud] -= 0.8
    for name, amount in (shift or {}).items():
        if name == AMOUNT_COLUMN:
            log_amount += amount * AMOUNT_LOG_SD
        elif name == TIME_COLUMN:
            columns[TIME_COLUMN] = columns[TIME_COLUMN] + amount * 3600.0
        else:
            columns[name] = columns[name] + amount * PCA_SD[name]
    columns[AMOUNT_COLUMN] = np.round(np.expm1(np.clip(log_amount, 0.0, 10.0)), 2)
    for name in PCA_COLUMNS:
        # 12 decimals, like the real file's 13-15 significant digits; also makes the CSV
        # written by to_csv_bytes read back bit for bit.
        columns[name] = np.round(columns[name], 12)
    ordered = {name: columns[name] for name in FEATURE_COLUMNS}
    if labelled:
        ordered[LABEL_COLUMN] = is_fraud.astype(np.int8)
    return ordered


def to_csv_bytes(columns: Mapping[str, np.ndarray], *, compress: bool = False) -> bytes:
    """Write columns as CSV the way the real creditcard.csv is written.

    The header names are quoted and so are the ``Class`` values, as in the real file.

    Parameters
    ----------
    columns : mapping of column name to 1-d array
    compress : bool
        Gzip the result (for ``.csv.gz`` batches).

    Returns
    -------
    bytes
    """
    names = list(columns)
    header = ",".join(f'"{name}"' for name in names)
    formats = ['"%d"' if name == LABEL_COLUMN else "%.15g" for name in names]
    matrix = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in names])
    buffer = io.StringIO()
    np.savetxt(buffer, matrix, fmt=formats, delimiter=",", header=header, comments="")
    data = buffer.getvalue().encode("utf-8")
    return gzip_module.compress(data, mtime=0) if compress else data

import numpy as np
import pytest

from fraudlib import layout
from fraudlib.schema import FEATURE_COLUMNS, LABEL_COLUMN
from fraudlib.synthetic import generate_transactions


def test_generator_shape_seed_and_fraud_rate():
    a = generate_transactions(50_000, seed=11)
    b = generate_transactions(50_000, seed=11)
    assert list(a) == [*FEATURE_COLUMNS, LABEL_COLUMN]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert 0.001 < a[LABEL_COLUMN].mean() < 0.003
    assert np.all(np.diff(a["Time"]) >= 0) and a["Time"].max() < 2 * 86_400
    assert (a["Amount"] >= 0).all()


def test_fraud_signal_is_learnable():
    columns = generate_transactions(50_000, seed=2, fraud_rate=0.01)
    fraud = columns[LABEL_COLUMN] == 1
    assert columns["V14"][fraud].mean() < columns["V14"][~fraud].mean() - 2.0


def test_shift_moves_only_the_named_features():
    base = generate_transactions(5000, seed=1)
    shifted = generate_transactions(5000, seed=1, shift={"V2": 1.0})
    assert shifted["V2"].mean() - base["V2"].mean() > 1.0
    np.testing.assert_array_equal(shifted["V3"], base["V3"])
    with pytest.raises(ValueError, match="unknown columns: V99"):
        generate_transactions(10, shift={"V99": 1.0})


def test_key_layout():
    key = "incoming/2024/day 1 été.csv"
    assert layout.quarantine_key(key) == "quarantine/2024/day 1 été.csv"
    assert layout.quarantine_error_key(key) == "quarantine/2024/day 1 été.csv.error.json"
    assert layout.drift_report_key(key, '"abc"') == "reports/drift/2024/day 1 été.csv.abc.json"
    assert layout.batch_record_key(key, "abc") == "records/batches/2024/day 1 été.csv.abc.json"
    assert layout.is_batch_key("incoming/a.CSV") and layout.is_batch_key("incoming/a.csv.gz")
    assert not layout.is_batch_key("quarantine/a.csv") and not layout.is_batch_key("incoming/a.txt")

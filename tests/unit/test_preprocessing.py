import numpy as np
import pytest

from fraudlib.preprocessing import Preprocessor, TimeEncoding
from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.synthetic import generate_transactions


def raw(n, seed=0, **kwargs):
    columns = generate_transactions(n, seed=seed, **kwargs)
    return np.column_stack([columns[name] for name in FEATURE_COLUMNS])


def test_fitted_on_train_only_and_standardises_it():
    train = raw(2000, seed=1)
    other = raw(500, seed=2, shift={"V1": 3.0})
    pre = Preprocessor.fit(train)
    transformed = pre.transform(train)
    np.testing.assert_allclose(transformed.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(transformed.std(axis=0), 1.0, atol=1e-4)
    # Other data goes through the training statistics, not its own: the shift stays visible.
    assert pre.transform(other)[:, pre.output_names.index("V1")].mean() > 1.0
    assert transformed.dtype == np.float64


@pytest.mark.parametrize(
    "encoding,names",
    [
        (TimeEncoding.DROP, 29),
        (TimeEncoding.RAW, 30),
        (TimeEncoding.HOUR_OF_DAY, 31),
    ],
)
def test_time_encodings(encoding, names):
    pre = Preprocessor.fit(raw(300), encoding)
    assert pre.n_outputs == names
    assert pre.output_names[-1] == "log1p_Amount"
    assert ("Time" in pre.output_names) == (encoding is TimeEncoding.RAW)


def test_hour_of_day_is_cyclic():
    features = raw(10)
    features[:, 0] = [0, 86_400, 3600, 90_000, 43_200, 129_600, 1, 86_401, 7200, 93_600]
    encoded = Preprocessor.fit(raw(1000), TimeEncoding.HOUR_OF_DAY).transform(features)
    np.testing.assert_allclose(encoded[0, :2], encoded[1, :2], atol=1e-5)  # midnight, day 1 and day 2
    np.testing.assert_allclose(encoded[2, :2], encoded[3, :2], atol=1e-5)  # 1 am


def test_log1p_amount_and_round_trip():
    train = raw(1000)
    pre = Preprocessor.fit(train)
    again = Preprocessor.from_dict(pre.to_dict())
    np.testing.assert_array_equal(again.transform(train), pre.transform(train))
    amount = np.log1p(train[:, -1])
    expected = (amount - amount.mean()) / amount.std()
    np.testing.assert_allclose(pre.transform(train)[:, -1], expected, rtol=1e-5, atol=1e-5)


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"shape \(n, 30\)"):
        Preprocessor.fit(np.zeros((5, 29)))

"""The /predict body: every accepted shape, and every refused one named by field."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from fraudlib.schema import FEATURE_COLUMNS
from fraudlib.scoring import EXAMPLE_FEATURES, EXAMPLE_TRANSACTION, describe_errors, field_path, request_model

PredictRequest = request_model(max_batch=5)


def _problems(body) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as raised:
        PredictRequest.model_validate(body)
    return describe_errors(raised.value.errors())


def test_seed_body_gives_one_row_in_the_seed_order():
    request = PredictRequest.model_validate({"features": EXAMPLE_FEATURES})
    assert not request.is_batch
    np.testing.assert_array_equal(request.feature_matrix(), np.array([EXAMPLE_FEATURES]))


def test_named_fields_in_any_order_give_canonical_columns():
    shuffled = dict(reversed(list(EXAMPLE_TRANSACTION.items())))
    request = PredictRequest.model_validate({"transaction": shuffled})
    np.testing.assert_array_equal(request.feature_matrix(), np.array([EXAMPLE_FEATURES]))


def test_integers_are_numbers():
    request = PredictRequest.model_validate({"features": [int(v) for v in EXAMPLE_FEATURES]})
    assert request.feature_matrix().dtype == np.float64


def test_batch_keeps_the_order():
    rows = [{**EXAMPLE_TRANSACTION, "Amount": float(i)} for i in range(5)]
    request = PredictRequest.model_validate({"transactions": rows})
    assert request.is_batch
    matrix = request.feature_matrix()
    assert matrix.shape == (5, 30)
    assert matrix[:, FEATURE_COLUMNS.index("Amount")].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"features": EXAMPLE_FEATURES[:29]}, "features", "exactly 30 numbers (Time, V1..V28, Amount); got 29"),
        ({"features": [*EXAMPLE_FEATURES, 1.0]}, "features", "exactly 30 numbers (Time, V1..V28, Amount); got 31"),
        ({"features": ["1.0", *EXAMPLE_FEATURES[1:]]}, "features[0]", "must be a JSON number"),
        ({"features": [None, *EXAMPLE_FEATURES[1:]]}, "features[0]", "must be a JSON number"),
        ({"features": [True, *EXAMPLE_FEATURES[1:]]}, "features[0]", "must be a JSON number"),
        ({"features": [*EXAMPLE_FEATURES[:3], float("nan"), *EXAMPLE_FEATURES[4:]]}, "features[3]", "finite"),
        ({"features": [*EXAMPLE_FEATURES[:29], float("inf")]}, "features[29]", "finite"),
        ({"transaction": {k: v for k, v in EXAMPLE_TRANSACTION.items() if k != "V7"}}, "transaction.V7", "required"),
        ({"transaction": {**EXAMPLE_TRANSACTION, "Merchant": 1.0}}, "transaction.Merchant", "not a known field"),
        ({"transaction": {**EXAMPLE_TRANSACTION, "Amount": "12"}}, "transaction.Amount", "must be a JSON number"),
        ({"transaction": [1, 2]}, "transaction", "must be a JSON object"),
        ({"transactions": []}, "transactions", "at least one transaction"),
        ({"transactions": [EXAMPLE_TRANSACTION] * 6}, "transactions", "holds 6 transactions; at most 5"),
        (
            {"transactions": [EXAMPLE_TRANSACTION, {**EXAMPLE_TRANSACTION, "V4": None}]},
            "transactions[1].V4",
            "must be a JSON number",
        ),
        ({}, "body", "give exactly one of 'features', 'transaction' or 'transactions'"),
        ({"features": EXAMPLE_FEATURES, "transaction": EXAMPLE_TRANSACTION}, "body", "(got features, transaction)"),
        ({"feature": EXAMPLE_FEATURES}, "feature", "not a known field"),
    ],
)
def test_bad_bodies_are_named(body, field, problem):
    problems = _problems(body)
    assert any(item["field"] == field and problem in item["problem"] for item in problems), problems


def test_numbers_beyond_float_range_are_refused_as_json_decodes_them():
    # Python's json module turns 1e400 into inf, as API Gateway's body reaches the handler.
    body = json.loads('{"features": [1e400' + ", 0" * 29 + "]}")
    assert _problems(body) == [
        {"field": "features[0]", "problem": describe_errors([{"type": "finite_number"}])[0]["problem"]}
    ]


def test_field_paths():
    assert field_path(("body", "transactions", 3, "V4")) == "transactions[3].V4"
    assert field_path(("query", "explain")) == "query parameter explain"
    assert field_path(("body",)) == "body"

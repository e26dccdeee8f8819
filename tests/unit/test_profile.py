import numpy as np
import pytest

from fraudlib.features import TIME_OF_DAY_FEATURE
from fraudlib.profile import (
    PROFILE_FEATURES,
    ProfileFormatError,
    ReferenceProfile,
    build_reference_profile,
)
from fraudlib.synthetic import generate_transactions


def test_profile_is_sorted_capped_and_round_trips():
    columns = generate_transactions(3000, seed=1)
    profile = build_reference_profile(columns, model_version="v7", data_hash="abc", max_rows=1000, seed=3)
    assert profile.n_rows == 1000
    assert profile.n_source_rows == 3000
    assert set(profile.sorted_values) == set(PROFILE_FEATURES)
    for values in profile.sorted_values.values():
        assert np.all(np.diff(values) >= 0)
    # Row-wise sample: the stored Time and Time_of_day come from the same rows.
    np.testing.assert_array_equal(
        np.sort(profile.sorted_values["Time"] % 86_400), profile.sorted_values[TIME_OF_DAY_FEATURE]
    )
    assert np.isin(profile.sorted_values["V1"], columns["V1"]).all()
    again = ReferenceProfile.from_bytes(profile.to_bytes())
    assert again.metadata() == profile.metadata()
    for name in PROFILE_FEATURES:
        np.testing.assert_array_equal(again.sorted_values[name], profile.sorted_values[name])


def test_uncapped_profile_keeps_every_row():
    columns = generate_transactions(500, seed=1)
    profile = build_reference_profile(columns, model_version="v", data_hash="h", max_rows=None)
    np.testing.assert_array_equal(profile.sorted_values["Amount"], np.sort(columns["Amount"]))


def test_corrupt_profile_is_a_clear_error():
    with pytest.raises(ProfileFormatError, match="not a readable"):
        ReferenceProfile.from_bytes(b"not an npz")


def test_empty_data_is_refused():
    with pytest.raises(ValueError, match="zero rows"):
        build_reference_profile({name: np.array([]) for name in PROFILE_FEATURES}, model_version="v", data_hash="h")

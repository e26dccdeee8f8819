"""Feature transforms shared by drift detection, training and scoring."""

import numpy as np

SECONDS_PER_DAY: float = 86_400.0

TIME_OF_DAY_FEATURE = "Time_of_day"
"""Name under which the drift profile stores ``Time mod 86400`` (seconds since midnight)."""


def time_of_day_s(time_s: np.ndarray) -> np.ndarray:
    """Seconds since midnight of a running clock.

    Parameters
    ----------
    time_s : ndarray
        ``Time`` values: seconds since the first transaction of the data set.

    Returns
    -------
    ndarray
        ``time_s mod 86400``, in seconds, in ``[0, 86400)``.
    """
    return np.mod(np.asarray(time_s, dtype=np.float64), SECONDS_PER_DAY)

"""The column schema of a transaction, in one place.

The columns are those of the public ULB credit-card fraud data set: ``Time`` (seconds since
the first transaction of the data set), the 28 PCA components ``V1``..``V28``, ``Amount``
(in the data set's currency) and, for labelled data, ``Class`` (1 = fraud).
"""

from typing import Final

TIME_COLUMN: Final = "Time"
AMOUNT_COLUMN: Final = "Amount"
PCA_COLUMNS: Final = tuple(f"V{i}" for i in range(1, 29))
FEATURE_COLUMNS: Final[tuple[str, ...]] = (TIME_COLUMN, *PCA_COLUMNS, AMOUNT_COLUMN)
"""The 30 model inputs, in the canonical order (the seed's ``features`` order)."""

LABEL_COLUMN: Final = "Class"
LABEL_VALUES: Final = (0.0, 1.0)

N_FEATURES: Final = len(FEATURE_COLUMNS)

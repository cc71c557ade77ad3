"""A project's raw schema, from the dataset section of its spec: column -> pandas dtype.

Stored rows use plain dtypes where a column may not hold nulls and nullable ones where it may
(label columns, `nullable: true`). Timestamps are stored timezone-naive in UTC.
"""

from __future__ import annotations

import pandas as pd

from tabml_assets.spec import DatasetSpec

DTYPES: dict[str, str] = {
    "float": "float64",
    "integer": "int64",
    "boolean": "bool",
    "string": "object",
    "datetime": "datetime64[us]",
}
NULLABLE_DTYPES: dict[str, str] = {**DTYPES, "integer": "Int64", "boolean": "boolean"}


def raw_columns(dataset: DatasetSpec) -> list[str]:
    return list(dataset.columns)


def raw_schema(dataset: DatasetSpec) -> dict[str, str]:
    """The dtypes of stored (validated) raw rows."""
    return {
        name: (NULLABLE_DTYPES if dataset.is_nullable(name) else DTYPES)[column.type]
        for name, column in dataset.columns.items()
    }


def unvalidated_schema(dataset: DatasetSpec) -> dict[str, str]:
    """Nullable dtypes while rows are unvalidated: a missing value is a row problem, not a crash."""
    return {name: NULLABLE_DTYPES[column.type] for name, column in dataset.columns.items()}


def type_of(dtype: str) -> str:
    """The spec type a pandas dtype belongs to (for messages and checks)."""
    for spec_type, name in (*DTYPES.items(), *NULLABLE_DTYPES.items()):
        if name == dtype:
            return spec_type
    return dtype


def as_text_objects(values: pd.Series) -> pd.Series:
    """An object column whose missing values are None (how string columns are stored)."""
    out = values.astype("object")
    out[values.isna().to_numpy()] = None
    return out

"""Shipped datasets (no download) and the wrapper for a user's own datasets."""

from trackcheck.data.sklearn_sets import breast_cancer, diabetes, digits, synthetic
from trackcheck.data.spec import DataSpec, from_datasets
from trackcheck.data.text import text_corpus

__all__ = [
    "DataSpec",
    "breast_cancer",
    "diabetes",
    "digits",
    "from_datasets",
    "synthetic",
    "text_corpus",
]

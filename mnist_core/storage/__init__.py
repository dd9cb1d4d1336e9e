"""Prediction storage in Apache Cassandra, with a durable local outbox so no prediction is lost.

Use :func:`get_storage` for the process-wide :class:`PredictionStore` (built lazily from the
settings; nothing connects at import time), and :meth:`PredictionRecord.new` to make records.
"""

from mnist_core.storage.errors import (
    PredictionNotFound,
    SchemaMigrationError,
    StorageAuthenticationError,
    StorageError,
    StorageUnavailable,
)
from mnist_core.storage.records import (
    AccuracyReport,
    HistoryCounts,
    PeriodCounts,
    PredictionRecord,
    StorageStatus,
    StoreOutcome,
)
from mnist_core.storage.service import PredictionStore, get_storage, start_storage

__all__ = [
    "AccuracyReport",
    "HistoryCounts",
    "PeriodCounts",
    "PredictionNotFound",
    "PredictionRecord",
    "PredictionStore",
    "SchemaMigrationError",
    "StorageAuthenticationError",
    "StorageError",
    "StorageStatus",
    "StorageUnavailable",
    "StoreOutcome",
    "get_storage",
    "start_storage",
]

"""The storage layer's exceptions: callers catch these, never the driver's, and show their message."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Base class for storage failures; the message is a sentence meant for the person using the app."""


class StorageUnavailable(StorageError):
    """Cassandra could not be reached within the configured, bounded number of attempts."""


class StorageAuthenticationError(StorageError):
    """Cassandra rejected the configured username or password; retrying would not help."""


class SchemaMigrationError(StorageError):
    """A schema file cannot be applied, or an applied one was edited afterwards."""


class PredictionNotFound(LookupError):
    """A correction named a prediction id that Cassandra does not hold."""


class PredictionExpired(PredictionNotFound):
    """A correction named a prediction past MNIST_RETENTION_DAYS: its rows are gone for good, so
    unlike a prediction not visible yet, waiting cannot help."""

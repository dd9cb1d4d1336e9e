"""Reading a picture once per Idempotency-Key: a client that retries gets the first answer back.

A client that sends ``POST /api/predict`` and times out cannot know whether the reading was
stored; sending it again would store and count it twice. With an ``Idempotency-Key`` header the
first request under a key stores the reading and remembers its answer (in the outbox, in the
same transaction as the prediction, and through it in Cassandra for the other replicas); every
later request with that key within a day gets the same answer back and stores nothing. A key
sent again with a different image is refused: it is a client's mistake, not a retry.

Only the SHA-256 of a key is kept. Requests of one process that carry the same key wait for
each other (the second finds the first's answer); two replicas that receive the same key at the
same moment, or while Cassandra cannot be asked, may both store it (the README says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable

from mnist_core.inference import Recognizer
from mnist_core.readings import StoredReading, record_for_reading
from mnist_core.storage import PredictionStore

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Requests with keys are serialised per stripe (a key's hash picks one), not all together.
LOCK_STRIPES = 64


class IdempotencyKeyError(ValueError):
    """The Idempotency-Key header is not a key this API accepts."""


class IdempotencyKeyReused(ValueError):
    """A key already answered for one image came with another."""


@dataclasses.dataclass(frozen=True)
class IdempotentAnswer:
    """The outcome of one keyed request: a fresh reading, or the first answer replayed."""

    # The reading made now (None when the answer is replayed).
    result: StoredReading | None
    # The answer's JSON object; None for a reading with no digits (nothing is stored or remembered).
    answer: dict | None
    replayed: bool


_locks = tuple(threading.Lock() for _ in range(LOCK_STRIPES))


def key_hash(key: str) -> str:
    """The SHA-256 (hex) under which a key's answer is kept, after checking the key's form."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= character <= "~" for character in key):
        raise IdempotencyKeyError(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID is a "
            "good key); nothing was read or stored.")
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def read_once(image: bytes, *, key: str, recognizer: Recognizer, store: PredictionStore,
              answer_of: Callable[[StoredReading], dict]) -> IdempotentAnswer:
    """Read and store `image` under `key`, or give back the answer the key already had.

    `answer_of` turns a stored reading into the API's JSON answer (the same function answers
    requests without a key). Raises IdempotencyKeyError for a malformed key and
    IdempotencyKeyReused when the key was used for another image.
    """
    hashed = key_hash(key)
    fingerprint = hashlib.sha256(image).hexdigest()
    with _locks[int(hashed[:8], 16) % LOCK_STRIPES]:
        remembered = store.remembered_answer(hashed)
        if remembered is not None:
            first_fingerprint, answer = remembered
            if first_fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    f"This {HEADER} was used within the last day for another image; use a new key for "
                    "a new image. Nothing was stored.")
            return IdempotentAnswer(result=None, answer=json.loads(answer), replayed=True)
        reading = recognizer.read(image)
        if not reading.has_digits:
            # Nothing is stored, so nothing to remember: a retry reads the same picture the same way.
            return IdempotentAnswer(result=StoredReading(reading=reading, record=None, outcome=None),
                                    answer=None, replayed=False)
        record = record_for_reading(reading, source="api", model_version=recognizer.model_version)
        outcome, answer = store.store_answered(
            record, key_hash=hashed, body_fingerprint=fingerprint,
            answer_of=lambda outcome: json.dumps(answer_of(StoredReading(reading=reading, record=record,
                                                                         outcome=outcome))))
        return IdempotentAnswer(result=StoredReading(reading=reading, record=record, outcome=outcome),
                                answer=json.loads(answer), replayed=False)

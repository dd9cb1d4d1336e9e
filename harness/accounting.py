"""Lost and duplicated predictions: the ids the app answered, matched against the rows in Cassandra.

Every scenario of the hardening run, the whole run and tests/test_cluster.py count the same
way, so the figures add up and mean the same thing everywhere.
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class Accounting:
    expected: int
    lost: int
    extra_copies: int
    unmatched_rows: int
    unknown_outcomes: int
    lost_ids: list[str] = dataclasses.field(default_factory=list)

    @property
    def duplicated(self) -> int:
        # Rows no answer told us about are explained only by attempts whose outcome we could not see.
        return self.extra_copies + max(0, self.unmatched_rows - self.unknown_outcomes)


def account(expected_ids: set[str], counts: collections.Counter, sources: dict[str, str], *, source: str | None,
            unknown_outcomes: int) -> Accounting:
    """Lost and duplicated among ``expected_ids``; rows of ``source`` (None: any) not expected are unmatched."""
    lost_ids = sorted(identifier for identifier in expected_ids if counts[identifier] == 0)
    extra = sum(counts[identifier] - 1 for identifier in expected_ids if counts[identifier] > 1)
    unmatched = sum(count for identifier, count in counts.items()
                    if identifier not in expected_ids and (source is None or sources.get(identifier) == source))
    return Accounting(expected=len(expected_ids), lost=len(lost_ids), extra_copies=extra, unmatched_rows=unmatched,
                      unknown_outcomes=unknown_outcomes, lost_ids=lost_ids)

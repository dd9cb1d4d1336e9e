"""The one check of a time-zone name: settings (MNIST_DISPLAY_TIMEZONE), the History page's zone,
``/api/stats?tz=`` and the CLI's ``--tz`` all refuse an unknown zone with the same sentence."""

from __future__ import annotations

import zoneinfo


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone of that name, or ValueError with a sentence saying what is expected."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known time zone; use an IANA name such as 'Europe/Paris'.") from None

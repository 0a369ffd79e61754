"""Settings read from the environment once, typed and validated at start-up.

A bad or missing value stops the process with one line naming the variable. In local mode
(``MODELGATE_ENV=local``, the default) the secrets a developer did not set are generated once into an
untracked file (``MODELGATE_LOCAL_SECRETS``, default ``.modelgate/local.env``) that the services and the
``modelgate`` command line both read; in production a missing or placeholder secret is refused.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_SECRETS_DEFAULT = ".modelgate/local.env"
#: Secrets generated in local mode when unset; each is 48 random bytes, URL-safe.
GENERATED_SECRETS = ("JWT_SECRET", "MODEL_SIGNING_KEY")
#: Values that are never acceptable outside local mode (copied from examples, left as defaults).
PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "password", "dev", "test", "example"})
MIN_SECRET_LENGTH = 32


#: Exit status for bad settings: gunicorn's "worker failed to boot", which makes its master stop instead
#: of restarting workers that can never start.
SETTINGS_EXIT_CODE = 3


class SettingsError(SystemExit):
    """The environment cannot produce valid settings. The one-line message was already printed to stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(SETTINGS_EXIT_CODE)
        self.message = message
        print(message, file=sys.stderr, flush=True)

    def __str__(self) -> str:
        return self.message


class CommonSettings(BaseSettings):
    """Settings every service reads. Field ``x_y`` comes from environment variable ``X_Y``."""

    # An empty variable (``MODEL_SIGNING_KEY=``) counts as unset: never an empty key or a registry at ".".
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True, env_ignore_empty=True)

    modelgate_env: Literal["local", "production"] = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    model_registry: Path = Path("./models")
    model_signing_key: SecretStr | None = None
    #: Largest request body accepted, in bytes; larger ones get 413 before they are read.
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    #: Seconds a client may pause while sending a request body before it gets a 408 (nginx's client_body_timeout).
    body_idle_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    #: Seconds a client may take to send a whole request body before it gets a 408 (gevent workers: the gateway).
    body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: Most rows (instances) in one request; more get 413.
    max_batch_rows: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("modelgate_env", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _production_secrets(self) -> CommonSettings:
        if self.modelgate_env == "production":
            check_secret("MODEL_SIGNING_KEY", self.model_signing_key)
        return self

    def signing_key(self) -> bytes:
        """The HMAC key for model artifacts; refuses to go on without one."""
        if self.model_signing_key is None:
            raise SettingsError(
                "modelgate: invalid setting MODEL_SIGNING_KEY: not set (needed to sign and verify models)"
            )
        return self.model_signing_key.get_secret_value().encode()


def check_secret(variable: str, value: SecretStr | None) -> None:
    """Refuse a missing, short or placeholder secret (used outside local mode)."""
    if value is None:
        raise ValueError(f"{variable}: required when MODELGATE_ENV=production")
    raw = value.get_secret_value()
    if raw.strip().lower() in PLACEHOLDERS or len(raw) < MIN_SECRET_LENGTH:
        raise ValueError(f"{variable}: placeholder or shorter than {MIN_SECRET_LENGTH} characters")


def local_secrets_path() -> Path:
    """Where local mode keeps its generated secrets."""
    return Path(os.environ.get("MODELGATE_LOCAL_SECRETS", LOCAL_SECRETS_DEFAULT))


def ensure_local_secrets(path: Path | None = None) -> Path:
    """Create (or complete) the untracked local secrets file, readable by its owner only.

    Safe when several processes start at once (gunicorn boots its workers together): the read, generate and
    write happen under an exclusive lock on a sibling ``.lock`` file, so every process ends up with the same
    secrets. Without it two workers could each write their own JWT secret, and one worker's tokens would be
    refused by the other.
    """
    path = path or local_secrets_path()
    existing = _read_env_file(path)
    if all(name in existing for name in GENERATED_SECRETS):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as exc:  # a filesystem without locks (NFS mounted nolock, some FUSE): go on unlocked
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        existing = _read_env_file(path)  # another process may have written it while this one waited
        missing = [name for name in GENERATED_SECRETS if name not in existing]
        if missing:
            for name in missing:
                existing[name] = secrets.token_urlsafe(48)
            body = "# Generated by modelgate for local mode. Never commit this file.\n"
            body += "".join(f"{k}={v}\n" for k, v in existing.items())
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(body)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
    finally:
        os.close(lock_fd)  # closing releases the lock
    return path


def _read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of ``path`` (none when it does not exist), comments skipped."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    return values


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S]) -> S:
    """Build ``cls`` from the environment, or stop the process with one line naming the bad variable."""
    env_file: Path | None = None
    if os.environ.get("MODELGATE_ENV", "local").strip().lower() == "local":
        try:
            env_file = ensure_local_secrets()
        except OSError as exc:
            raise SettingsError(
                f"modelgate: invalid setting MODELGATE_LOCAL_SECRETS: cannot write {exc.filename}: {exc.strerror}"
            ) from exc
    try:
        return cls(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
        if not first["loc"] and ": " in message:  # model-level checks name their variable first
            variable, message = message.split(": ", 1)
        raise SettingsError(f"modelgate: invalid setting {variable}: {message}") from None

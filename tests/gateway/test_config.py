"""``GatewaySettings`` from the environment: bad values stop start-up with one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewaySettings, parse_rate, parse_urls
from shared.config import SettingsError, load_settings

GOOD_SECRET = "a-production-grade-secret-0123456789abcdef"

#: Every variable these tests may set, cleared first so the developer's environment cannot leak in.
VARIABLES = [
    "MODELGATE_ENV",
    "JWT_SECRET",
    "JWT_ALGORITHMS",
    "JWT_PUBLIC_KEY_FILE",
    "JWKS_URL",
    "MODEL_SIGNING_KEY",
    "RATE_LIMIT",
    "RATE_LIMIT_TIERS",
    "RATE_LIMIT_FALLBACK",
    "RATE_LIMIT_FAILURE_MODE",
    "RATE_LIMIT_BURST",
    "PREPROCESSING_URLS",
    "MODEL_URLS",
    "CLIENTS_FILE",
    "GATEWAY_PORT",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment in local mode, with the generated secrets file in this test's directory."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELGATE_LOCAL_SECRETS", str(tmp_path / "local.env"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def refusal(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SettingsError) as stopped:
        load_settings(GatewaySettings)
    message = str(stopped.value)
    assert stopped.value.code == 3
    assert "\n" not in message
    assert capsys.readouterr().err.strip() == message  # printed once, as one line
    return message


def test_defaults_load_in_local_mode(env: pytest.MonkeyPatch) -> None:
    settings = load_settings(GatewaySettings)

    assert settings.jwt_secret is not None  # generated into the local secrets file
    assert settings.tiers() == {"default": (120, 60.0)}
    assert settings.algorithms() == ["HS256"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RATE_LIMIT", "lots"),
        ("RATE_LIMIT", "0/minute"),
        ("RATE_LIMIT", "10/fortnight"),
        ("RATE_LIMIT", "-5/second"),
        ("RATE_LIMIT", "10 per minute"),
        ("RATE_LIMIT_FALLBACK", "60"),
        ("RATE_LIMIT_TIERS", "gold"),
        ("RATE_LIMIT_TIERS", "gold=fast"),
        ("RATE_LIMIT_TIERS", "gold=10/minute,bad tier=5/minute"),
        ("RATE_LIMIT_TIERS", "=10/minute"),
        ("PREPROCESSING_URLS", "ftp://127.0.0.1:8001"),
        ("PREPROCESSING_URLS", "127.0.0.1:8001"),
        ("PREPROCESSING_URLS", "http://127.0.0.1:8001/path"),
        ("PREPROCESSING_URLS", "http://a:1,http://user@b:2"),
        ("PREPROCESSING_URLS", " , "),
        ("MODEL_URLS", "https://model:8002"),
        ("JWT_ALGORITHMS", "none"),
        ("JWT_ALGORITHMS", "HS256,XS999"),
        ("JWT_ALGORITHMS", ","),
        ("RATE_LIMIT_FAILURE_MODE", "maybe"),
        ("RATE_LIMIT_BURST", "0"),
        ("GATEWAY_PORT", "99999"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    env.setenv(variable, value)

    message = refusal(capsys)

    assert message.startswith(f"modelgate: invalid setting {variable}:")


@pytest.mark.parametrize("secret", [None, "changeme", "secret", "short-but-not-a-placeholder"])
def test_production_refuses_a_missing_or_placeholder_jwt_secret(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], secret: str | None
) -> None:
    env.setenv("MODELGATE_ENV", "production")
    env.setenv("MODEL_SIGNING_KEY", GOOD_SECRET)
    if secret is not None:
        env.setenv("JWT_SECRET", secret)

    message = refusal(capsys)

    assert message.startswith("modelgate: invalid setting JWT_SECRET:")
    if secret:
        assert secret not in message


def test_production_accepts_a_real_secret(env: pytest.MonkeyPatch) -> None:
    env.setenv("MODELGATE_ENV", "production")
    env.setenv("MODEL_SIGNING_KEY", GOOD_SECRET)
    env.setenv("JWT_SECRET", GOOD_SECRET + "-jwt")

    settings = load_settings(GatewaySettings)

    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == GOOD_SECRET + "-jwt"


@pytest.mark.parametrize("algorithms", ["RS256", "ES256", "HS256,RS256"])
def test_asymmetric_algorithms_need_a_key_file_or_jwks_url(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], algorithms: str
) -> None:
    env.setenv("JWT_ALGORITHMS", algorithms)

    message = refusal(capsys)

    assert message.startswith("modelgate: invalid setting JWT_PUBLIC_KEY_FILE:")


def test_a_missing_public_key_file_is_refused(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env.setenv("JWT_ALGORITHMS", "RS256")
    env.setenv("JWT_PUBLIC_KEY_FILE", str(tmp_path / "absent.pem"))

    assert refusal(capsys).startswith("modelgate: invalid setting JWT_PUBLIC_KEY_FILE:")


def test_rs256_with_a_jwks_url_needs_no_secret(env: pytest.MonkeyPatch) -> None:
    env.setenv("MODELGATE_ENV", "production")
    env.setenv("MODEL_SIGNING_KEY", GOOD_SECRET)
    env.setenv("JWT_ALGORITHMS", "rs256, es256")
    env.setenv("JWKS_URL", "https://id.example/jwks.json")

    settings = load_settings(GatewaySettings)

    assert settings.algorithms() == ["RS256", "ES256"]
    assert settings.jwt_secret is None


def test_tiers_and_urls_are_parsed(env: pytest.MonkeyPatch) -> None:
    env.setenv("RATE_LIMIT", "30/second")
    env.setenv("RATE_LIMIT_TIERS", " gold = 1200/minute , free=5/hours ")
    env.setenv("PREPROCESSING_URLS", "http://pre-a:8001/, http://pre-b:8001")

    settings = load_settings(GatewaySettings)

    assert settings.tiers() == {"default": (30, 1.0), "gold": (1200, 60.0), "free": (5, 3600.0)}
    assert parse_urls(settings.preprocessing_urls) == ["http://pre-a:8001", "http://pre-b:8001"]


@pytest.mark.parametrize(
    ("text", "parsed"), [("1/second", (1, 1.0)), (" 120 / minute ", (120, 60.0)), ("7/days", (7, 86400.0))]
)
def test_parse_rate(text: str, parsed: tuple[int, float]) -> None:
    assert parse_rate(text) == parsed

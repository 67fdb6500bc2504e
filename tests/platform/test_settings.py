"""Settings refuse what cannot be secure or cannot work."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tiangong.platform.errors import ConfigurationError
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings


@pytest.mark.parametrize(
    "overrides",
    [
        {"admin_token": "tg_admin"},
        {"admin_token": "tg_changeme"},
        {"admin_token": "changeme"},
        {"admin_token": "no-prefix-but-long-enough-123"},
        {"mqtt_password": "public"},
        {"mqtt_password": "short"},
        {"store": "postgres"},
        {"http_port": 70000},
        {"trusted_proxies": ["*"]},
        {"trusted_proxies": ["0.0.0.0/0"]},
        {"trusted_proxies": ["proxy.plant.local"]},
    ],
)
def test_insecure_or_broken_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as info:
        PlatformSettings.load(**overrides)
    assert "invalid platform settings" in str(info.value)


def test_demo_may_use_anything_and_good_secrets_pass() -> None:
    PlatformSettings.load(demo=True, mqtt_password="public")
    settings = PlatformSettings.load(
        admin_token="tg_" + "x" * 40, mqtt_password="a-long-generated-secret-value"
    )
    assert settings.admin_token is not None
    proxies = PlatformSettings.load(trusted_proxies=["10.0.0.5", "fd00::/64"]).trusted_proxies
    assert proxies == ["10.0.0.5", "fd00::/64"]


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIANGONG_MQTT_PORT", "2883")
    monkeypatch.setenv("TIANGONG_STORE", "postgres")
    monkeypatch.setenv("TIANGONG_POSTGRES_DSN", "postgresql://x@y/z")
    settings = PlatformSettings.load()
    assert (settings.mqtt_port, settings.store) == (2883, "postgres")
    monkeypatch.setenv("TIANGONG_ADMIN_TOKEN", "admin")
    with pytest.raises(ConfigurationError, match="admin_token"):
        PlatformSettings.load()


def test_session_and_token_lifetimes_reach_the_services(tmp_path: Path) -> None:
    settings = PlatformSettings.load(
        data_dir=tmp_path,
        session_idle_minutes=5,
        session_hours=2,
        token_default_days=7,
        token_max_days=30,
    )
    platform = Platform(settings)
    assert platform.users.idle_timeout == timedelta(minutes=5)
    assert platform.users.session_lifetime == timedelta(hours=2)
    assert platform.tokens.default_lifetime == timedelta(days=7)
    assert platform.tokens.max_lifetime == timedelta(days=30)
    with pytest.raises(ConfigurationError, match="session_idle_minutes"):
        PlatformSettings.load(session_idle_minutes=0)

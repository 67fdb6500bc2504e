"""The platform keeps an external Mosquitto's files (the Mosquitto itself: test_mqtt_tls.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.platform.conftest import registry_platform
from tiangong.platform.errors import ConfigurationError
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.mosquitto_keeper import MosquittoKeeper
from tiangong.platform.settings import PlatformSettings
from tiangong.security.credentials import hash_device_secret


async def test_a_failing_reload_is_counted_and_tried_again_without_rewriting(
    tmp_path: Path,
) -> None:
    verdict = tmp_path / "verdict"
    verdict.write_text("3")
    files = tmp_path / "mosquitto"
    async with registry_platform(
        tmp_path,
        mosquitto_files=files,
        mosquitto_reload_command=f"sh -c 'echo reload refused >&2; exit $(cat {verdict})'",
        mosquitto_check=0.2,
    ) as env:
        keeper = env.platform.mosquitto
        assert keeper is not None
        async with asyncio.timeout(10):
            while "pump-1:" not in (files / "passwd").read_text():
                await asyncio.sleep(0.05)
            while keeper.stats.reload_failures < 3:
                await asyncio.sleep(0.05)
        assert keeper.reload_pending
        assert "exited 3: reload refused" in keeper.stats.last_error
        writes = keeper.stats.writes
        verdict.write_text("0")
        async with asyncio.timeout(10):
            while keeper.reload_pending:
                await asyncio.sleep(0.05)
        assert keeper.stats.writes == writes  # retried, not rewritten
        assert keeper.stats.reloads == 1
        # Nothing changed: nothing written, nothing reloaded.
        assert await keeper.sync() is False
        # A device decommissioned: written and reloaded at the next look.
        await env.platform.registry.apply_lifecycle(
            "pump-2", LifecycleTrigger.DECOMMISSION, reason="t"
        )
        assert await keeper.sync() is True
        assert "pump-2:" not in (files / "passwd").read_text()
        assert keeper.stats.reloads == 2
        metrics = (await env.api.get("/metrics")).text
        assert 'tiangong_mosquitto_files_total{event="reloaded"} 2.0' in metrics
        assert 'tiangong_mosquitto_files_total{event="reload_failed"}' in metrics

        # The platform's own broker user is in the password file it keeps (the file is the
        # platform's: a line added by hand would be gone at the next write).
        own = MosquittoKeeper(
            tmp_path / "own",
            env.platform.registry,
            None,
            service_users=["tiangong-platform"],
            service_credentials=[("tiangong-platform", hash_device_secret("a-long-secret-1"))],
        )
        assert await own.sync() is True
        lines = (tmp_path / "own" / "passwd").read_text().splitlines()
        assert lines[0].startswith("tiangong-platform:$7$")
        assert "user tiangong-platform" in (tmp_path / "own" / "acl").read_text()
        assert await own.sync() is False  # hashed once: the same file, not a new salt


async def test_a_directory_that_is_not_writable_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="cannot write Mosquitto's files"):
        async with registry_platform(tmp_path, mosquitto_files=blocker / "mosquitto"):
            pass


@pytest.mark.parametrize(
    "overrides",
    [
        {"mosquitto_tls_port": 8884},
        {"mosquitto_pid_file": "/run/mosquitto/mosquitto.pid"},
        {
            "mosquitto_files": "/etc/mosquitto/tiangong",
            "mosquitto_pid_file": "/run/mosquitto/mosquitto.pid",
            "mosquitto_reload_command": "systemctl reload mosquitto",
        },
    ],
)
def test_mosquitto_settings_that_cannot_work_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PlatformSettings.load(**overrides)

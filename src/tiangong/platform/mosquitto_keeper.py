"""Keeping an external Mosquitto's password file, ACL and TLS files equal to the platform's.

Mosquitto reads who may log in (``password_file``), what each identity may touch
(``acl_file``) and which certificates are revoked (``crlfile``) from files, and reads them again
on SIGHUP; it cannot ask the platform (not without a compiled plugin). ``tiangong broker
mosquitto-files`` writes those files once. ``MosquittoKeeper`` keeps them true while the
platform runs: every ``mosquitto_check`` seconds it compares who may log in with what
(``BrokerIdentities``: the registry's part taken again only when the registry changed, the
tenants' CAs read in a thread), and when anything an identity depends on changed (a device
registered, decommissioned or given a new secret, a certificate issued, revoked or expired) it
writes them (atomically) and makes Mosquitto reload, through its pid file (SIGHUP) or a
command such as ``systemctl reload mosquitto``. The CRLs are valid for an hour, so the files
are written and Mosquitto reloaded every ``CRL_REFRESH_S`` as well, changed or not: a CRL past
its ``nextUpdate`` makes OpenSSL refuse every client of that CA.

A revocation therefore takes effect on Mosquitto within ``mosquitto_check`` seconds (2 by
default) with no operator step; a revocation through the API asks for a look at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from tiangong.files import atomic_write
from tiangong.network.mosquitto import render_acl, render_passwd, render_tls_listener
from tiangong.platform.certificates import BROKER_SECRET_MODE, PlatformCertificates
from tiangong.platform.errors import ConfigurationError
from tiangong.platform.registry import DeviceRegistry

__all__ = [
    "CRL_REFRESH_S",
    "BrokerIdentities",
    "MosquittoFiles",
    "MosquittoKeeper",
    "password_identities",
    "render_mosquitto_files",
    "with_certificates",
    "write_mosquitto_files",
]

_log = logging.getLogger(__name__)

#: Seconds between two writes of the CRLs even when nothing changed (they are valid an hour).
CRL_REFRESH_S: Final = 20 * 60.0
#: Seconds a reload command may take.
_RELOAD_TIMEOUT_S: Final = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerIdentities:
    """Everything Mosquitto's files say, as data: equal identities render equal files.

    Attributes:
        credentials: (device, ``$7$`` hash) of each device that may log in with its password.
        principals: (tenant, site, device) of the same devices, for their ACL blocks.
        certified: (tenant, site, device) of each device holding a valid certificate.
        revoked: (tenant, revoked serials) of each tenant CA: what the CRLs say (freshly
            signed CRLs differ at every signing, so they are compared through this).
    """

    credentials: tuple[tuple[str, str], ...]
    principals: tuple[tuple[str, str, str], ...]
    certified: tuple[tuple[str, str, str], ...] = ()
    revoked: tuple[tuple[str, tuple[int, ...]], ...] = ()


def password_identities(registry: DeviceRegistry) -> BrokerIdentities:
    """The devices that log in with a password (from memory: call it on the event loop)."""
    credentials = registry.credentials()
    principals = tuple(
        (entry.device.tenant_id, entry.device.site_id, entry.device.id)
        for device_id, _ in credentials
        if (entry := registry.lookup(device_id)) is not None
    )
    return BrokerIdentities(tuple(credentials), principals)


def with_certificates(
    identities: BrokerIdentities,
    registry: DeviceRegistry,
    certificates: PlatformCertificates | None,
) -> BrokerIdentities:
    """``identities`` with the certificate identities and revocations added.

    Blocking (it reads the CA registers): run it in a thread.
    """
    if certificates is None:
        return identities
    revoked = []
    for tenant in certificates.tenants():
        ca = certificates.existing_ca(tenant)
        if ca is not None:
            serials = sorted(r.serial for r in ca.certificates() if r.revoked_at is not None)
            revoked.append((tenant, tuple(serials)))
    return dataclasses.replace(
        identities,
        certified=tuple(certificates.certified_devices(registry)),
        revoked=tuple(revoked),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """What Mosquitto reads, rendered."""

    passwd: str
    acl: str
    devices: int
    certified: int


def render_mosquitto_files(
    identities: BrokerIdentities,
    *,
    service_users: Iterable[str],
    service_credentials: Iterable[tuple[str, str]] = (),
) -> MosquittoFiles:
    """The password file and ACL for the devices and certificate identities.

    Args:
        identities: who may log in and with what.
        service_users: the platform's own broker users.
        service_credentials: (user, ``$7$`` hash) of those with a password.
    """
    passwd = render_passwd([*service_credentials, *identities.credentials])
    acl = render_acl(
        identities.principals,
        service_users=list(service_users),
        certificate_devices=identities.certified,
    )
    return MosquittoFiles(
        passwd=passwd,
        acl=acl,
        devices=len(identities.credentials),
        certified=len(identities.certified),
    )


def write_mosquitto_files(
    out: Path,
    files: MosquittoFiles,
    certificates: PlatformCertificates | None,
    *,
    tls_port: int | None,
) -> None:
    """Write ``passwd`` (0640), ``acl`` and, with ``tls_port``, ``tls/`` and ``tls-listener.conf``.

    Every file is replaced atomically: Mosquitto may reload at any moment.

    Raises:
        ValueError: a TLS listener is asked for but no tenant has a device CA yet.
    """
    out.mkdir(parents=True, exist_ok=True)
    if tls_port is not None:
        if certificates is None or not certificates.tenants():
            raise ValueError(
                "no tenant has a device CA yet: create an enrolment token first"
                " (POST /api/v1/devices/<id>/enrolment-tokens)"
            )
        paths = certificates.write_mosquitto_tls(out / "tls")
        listener = render_tls_listener(
            port=tls_port,
            cafile=str(paths["cafile"].resolve()),
            certfile=str(paths["certfile"].resolve()),
            keyfile=str(paths["keyfile"].resolve()),
            crlfile=str(paths["crlfile"].resolve()),
        )
        atomic_write(out / "tls-listener.conf", listener.encode())
    atomic_write(out / "passwd", files.passwd.encode(), mode=BROKER_SECRET_MODE)
    atomic_write(out / "acl", files.acl.encode())


@dataclasses.dataclass(slots=True)
class KeeperStats:
    """What the keeper did since the platform started."""

    writes: int = 0
    reloads: int = 0
    reload_failures: int = 0
    last_error: str = ""


class MosquittoKeeper:
    """Keeps a Mosquitto's files in ``out`` current and makes it reload when they change.

    Args:
        out: the directory Mosquitto's configuration points at (``password_file``,
            ``acl_file``, and the included ``tls-listener.conf``).
        registry: the device registry.
        certificates: the tenants' CAs (None: no certificate identities).
        service_users: the platform's own broker users (read everything, write commands).
        service_credentials: (user, ``$7$`` hash) of those that log in with a password: the
            password file is the platform's, so they are written into it too.
        tls_port: also keep a TLS listener for device certificates on this port.
        pid_file: Mosquitto's pid file (``pid_file`` in mosquitto.conf): reload by SIGHUP.
        reload_command: or a command that makes Mosquitto reload (``systemctl reload
            mosquitto``); run without a shell.
        observe: told of each ``written``, ``reloaded`` and ``reload_failed`` (metrics).
    """

    def __init__(
        self,
        out: Path,
        registry: DeviceRegistry,
        certificates: PlatformCertificates | None,
        *,
        service_users: Iterable[str],
        service_credentials: Iterable[tuple[str, str]] = (),
        tls_port: int | None = None,
        pid_file: Path | None = None,
        reload_command: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str], None] = lambda _event: None,
    ) -> None:
        if pid_file is not None and reload_command:
            raise ConfigurationError(
                "name either Mosquitto's pid file or a reload command, not both"
            )
        self.out = out
        self.registry = registry
        self.certificates = certificates
        self.service_users = list(service_users)
        self.service_credentials = list(service_credentials)
        self.tls_port = tls_port
        self.pid_file = pid_file
        self.reload_command = shlex.split(reload_command) if reload_command else None
        self.stats = KeeperStats()
        self._clock = clock
        self._observe = observe
        self._identities: BrokerIdentities | None = None
        self._passwords = BrokerIdentities((), ())
        self._generation = -1  # the registry's generation the passwords were taken at
        self._written_at = float("-inf")
        self._lock = asyncio.Lock()
        self._warned = False
        self._failing = False
        #: Files were written that Mosquitto has not been made to read yet.
        self.reload_pending = False

    async def sync(self, *, force: bool = False) -> bool:
        """Write the files if anything changed (or ``force``) and have Mosquitto reload them.

        A reload that failed (Mosquitto not running yet, a command that failed) is tried again
        at every look until it succeeds; the files are not written again for it.

        Returns:
            Whether the files were written.

        Raises:
            ConfigurationError: the files cannot be written (the directory is not ours); the
                message says what to fix.
        """
        async with self._lock:
            # The registry's part is taken again only when the registry changed (it is in
            # memory and may not be iterated from a thread); the CAs are read at every look,
            # in a thread, because another process may revoke and certificates expire.
            if self._generation != self.registry.generation:
                self._passwords = password_identities(self.registry)
                self._generation = self.registry.generation
            identities = await asyncio.to_thread(
                with_certificates, self._passwords, self.registry, self.certificates
            )
            stale = self._clock() - self._written_at >= CRL_REFRESH_S
            written = force or stale or identities != self._identities
            if written:
                files = await asyncio.to_thread(
                    render_mosquitto_files,
                    identities,
                    service_users=self.service_users,
                    service_credentials=self.service_credentials,
                )
                await self._write(files)
                self._identities = identities
            if self.reload_pending:
                await self._reload()
            return written

    async def _write(self, files: MosquittoFiles) -> None:
        tls_port = self.tls_port
        if tls_port is not None and (self.certificates is None or not self.certificates.tenants()):
            # Mosquitto refuses an empty CA bundle: the TLS files follow once the first tenant
            # CA exists (the first enrolment token creates it).
            _log.warning("mosquitto: no tenant has a device CA yet; no TLS files written")
            tls_port = None
        try:
            await asyncio.to_thread(
                write_mosquitto_files, self.out, files, self.certificates, tls_port=tls_port
            )
        except (OSError, ValueError) as exc:
            self.stats.last_error = str(exc)
            raise ConfigurationError(
                f"cannot write Mosquitto's files into {self.out}: {exc}"
            ) from exc
        self._written_at = self._clock()
        self.stats.writes += 1
        self._observe("written")
        self.reload_pending = True
        _log.info(
            "mosquitto: wrote %s (%d devices, %d certificate identities)",
            self.out,
            files.devices,
            files.certified,
        )

    async def _reload(self) -> None:
        if self.pid_file is None and self.reload_command is None:
            if not self._warned:
                _log.warning(
                    "mosquitto: files written to %s; no pid file or reload command is set, "
                    "so Mosquitto reads them only when it is reloaded (SIGHUP)",
                    self.out,
                )
                self._warned = True
            self.reload_pending = False
            return
        try:
            if self.pid_file is not None:
                await asyncio.to_thread(self._signal_pid, self.pid_file)
            else:
                await self._run_reload_command()
        except (OSError, ValueError, TimeoutError) as exc:
            self.stats.reload_failures += 1
            self.stats.last_error = str(exc)
            self._observe("reload_failed")
            # Once per streak: Mosquitto may simply not be running yet.
            level = logging.DEBUG if self._failing else logging.ERROR
            _log.log(level, "mosquitto: could not make it reload: %s; trying again", exc)
            self._failing = True
            return
        if self._failing:
            _log.info("mosquitto: reloaded after %d failed tries", self.stats.reload_failures)
        self._failing = False
        self.reload_pending = False
        self.stats.reloads += 1
        self._observe("reloaded")

    @staticmethod
    def _signal_pid(pid_file: Path) -> None:
        text = pid_file.read_text(encoding="ascii").strip()
        if not text.isdigit():
            raise ValueError(f"{pid_file} holds no process id")
        os.kill(int(text), signal.SIGHUP)

    async def _run_reload_command(self) -> None:
        assert self.reload_command is not None
        proc = await asyncio.create_subprocess_exec(
            *self.reload_command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(_RELOAD_TIMEOUT_S):
                _, stderr = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            said = stderr.decode(errors="replace").strip()[:300]
            raise ValueError(
                f"`{shlex.join(self.reload_command)}` exited {proc.returncode}: {said}"
            )

"""Tenants (enterprises)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from tiangong.platform.api.auth import DevicesRead, PlatformAdmin, PlatformDep, TenantsWrite
from tiangong.platform.api.schemas import TenantIn, TenantPatch
from tiangong.platform.model import Tenant

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])


@router.get("", response_model=list[Tenant])
async def list_tenants(platform: PlatformDep, principal: DevicesRead) -> list[Tenant]:
    """All tenants (platform admin) or the caller's own."""
    tenants = await platform.registry.list_tenants()
    return [t for t in tenants if principal.scope is None or t.id == principal.scope]


@router.post("", response_model=Tenant, status_code=status.HTTP_201_CREATED)
async def create_tenant(body: TenantIn, platform: PlatformDep, principal: PlatformAdmin) -> Tenant:
    """Create a tenant (platform admin)."""
    del principal
    return await platform.registry.create_tenant(
        Tenant(id=body.id, name=body.name, retention_days=body.retention_days)
    )


@router.get("/{tenant_id}", response_model=Tenant)
async def get_tenant(tenant_id: str, platform: PlatformDep, principal: DevicesRead) -> Tenant:
    """One tenant."""
    if principal.scope not in (None, tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant_id!r} not found")
    return await platform.registry.get_tenant(tenant_id)


@router.patch("/{tenant_id}", response_model=Tenant)
async def update_tenant(
    tenant_id: str, body: TenantPatch, platform: PlatformDep, principal: TenantsWrite
) -> Tenant:
    """Rename a tenant or change its telemetry retention (tenant admin)."""
    if principal.scope not in (None, tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant_id!r} not found")
    return await platform.registry.update_tenant(
        tenant_id, name=body.name, retention_days=body.retention_days
    )

"""Thing models (物模型): import (create a version), export, list versions."""

from __future__ import annotations

from fastapi import APIRouter, status

from tiangong.platform.api.auth import (
    DevicesRead,
    DevicesWrite,
    PlatformDep,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.errors import NotFoundError
from tiangong.platform.model import ThingModel

router = APIRouter(prefix="/api/v1/thing-models", tags=["thing models"])


@router.get("", response_model=list[ThingModel])
async def list_thing_models(
    platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> list[ThingModel]:
    """The latest version of every thing model of a tenant."""
    scope = tenant_for_read(principal, tenant)
    if scope is None:
        models: list[ThingModel] = []
        for t in await platform.registry.list_tenants():
            models.extend(await platform.registry.list_thing_models(t.id))
        return models
    return await platform.registry.list_thing_models(scope)


@router.post("", response_model=ThingModel, status_code=status.HTTP_201_CREATED)
async def import_thing_model(
    model: ThingModel,
    platform: PlatformDep,
    principal: DevicesWrite,
    tenant_id: str | None = None,
) -> ThingModel:
    """Import a thing model document; it becomes the next version of its id.

    Importing a document identical to the latest version returns that version unchanged.
    """
    return await platform.registry.put_thing_model(tenant_for_write(principal, tenant_id), model)


@router.get("/{model_id}", response_model=ThingModel)
async def export_thing_model(
    model_id: str,
    platform: PlatformDep,
    principal: DevicesRead,
    version: int | None = None,
    tenant: str | None = None,
) -> ThingModel:
    """Export a thing model (the latest version, or ``?version=``) as JSON."""
    return await platform.registry.get_thing_model(
        tenant_for_write(principal, tenant), model_id, version
    )


@router.get("/{model_id}/versions", response_model=list[int])
async def thing_model_versions(
    model_id: str, platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> list[int]:
    """All versions of a thing model (404 when the tenant has no such model)."""
    versions = await platform.registry.thing_model_versions(
        tenant_for_write(principal, tenant), model_id
    )
    if not versions:
        raise NotFoundError("thing model", model_id)
    return versions

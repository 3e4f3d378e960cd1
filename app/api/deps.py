"""Dependencies, as Annotated aliases.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
hop per dependency per request for what is a dict lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.runtime.inference import InferencePipeline
from app.runtime.model_lookup import ModelLookup
from app.runtime.registry import ModelRegistry
from app.settings import Settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pipeline(request: Request) -> InferencePipeline:
    return request.app.state.pipeline


async def get_lookup(request: Request) -> ModelLookup:
    return ModelLookup(request.app.state.registry)


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PipelineDep = Annotated[InferencePipeline, Depends(get_pipeline)]
LookupDep = Annotated[ModelLookup, Depends(get_lookup)]

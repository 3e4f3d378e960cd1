"""The FastAPI application: wiring only (factory, lifespan, middleware, routers, error handlers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import memory, tf_runtime
from app.api.body_limit import BodySizeLimitMiddleware
from app.api.errors import install_error_handlers
from app.api.routes import admin, explain, health, kserve_v2, models, predict, tf_serving, web
from app.inference import InferencePipeline
from app.registry import ModelRegistry
from app.settings import Settings, get_settings

DESCRIPTION = (
    "One binary image classifier per disease (the CNN of 'Analysis of Medical Images using Deep Neural "
    "Networks', 2022), trained on public data sets. **Research use only; not for diagnosis.**"
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        tf_runtime.configure(settings.tf_intra_op_threads, settings.tf_inter_op_threads)
        registry = ModelRegistry(settings)
        app.state.registry = registry
        app.state.pipeline = InferencePipeline(registry, settings)
        await registry.load_all()
        memory.freeze_loaded_objects()
        watcher = (asyncio.create_task(registry.watch(settings.model_poll_interval_s))
                   if settings.model_poll_interval_s > 0 else None)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await registry.close()

    app = FastAPI(title="MedScan", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    install_error_handlers(app)
    for module in (predict, explain, models, health, tf_serving, kserve_v2, admin, web):
        app.include_router(module.router)
    app.mount(web.STATIC_PATH, web.static_files(), name="static")
    return app


app = create_app()

"""The FastAPI application: wiring only (factory, lifespan, middleware, routers, error handlers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import logging_config
from app.api.auth import ApiKeyMiddleware, configured_keys
from app.api.body_limit import BodySizeLimitMiddleware
from app.api.errors import install_error_handlers
from app.api.observability import REQUEST_ID_HEADER, RequestContextMiddleware
from app.api.routes import admin, dicomweb, explain, health, kserve_v2, metrics, models, predict, tf_serving, web
from app.api.server import ShutdownGate
from app.api.shutdown import ShutdownMiddleware
from app.contract import memory
from app.pacs import service as pacs
from app.runtime import tf_runtime
from app.runtime.inference import InferencePipeline
from app.runtime.metrics import ServiceMetrics
from app.runtime.modality_check import load_or_warn
from app.runtime.registry import ModelRegistry
from app.settings import Settings, get_settings

DESCRIPTION = (
    "One binary image classifier per disease (the CNN of 'Analysis of Medical Images using Deep Neural "
    "Networks', 2022), trained on public data sets. **Research use only; not for diagnosis.**"
)


def _lifespan(settings: Settings, service_metrics: ServiceMetrics | None):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging_config.configure(settings.log_level, settings.log_format)
        tf_runtime.configure(settings.tf_intra_op_threads, settings.tf_inter_op_threads, settings.models_dir)
        registry = ModelRegistry(settings, batch_observer=service_metrics.observe_batch if service_metrics else None)
        if service_metrics is not None:
            service_metrics.watch(registry)
        app.state.registry = registry
        modality = await asyncio.to_thread(load_or_warn, settings.models_dir) if settings.modality_check else None
        app.state.pipeline = InferencePipeline(registry, settings, service_metrics, modality)
        await registry.load_all()
        memory.freeze_loaded_objects()
        # Sized once the models are in memory: the default is a share of what is left (app/runtime/decode_budget.py).
        app.state.pipeline.budget.limit_bytes = settings.decode_memory_bytes()
        watcher = (
            asyncio.create_task(registry.watch(settings.model_poll_interval_s))
            if settings.model_poll_interval_s > 0
            else None
        )
        pacs_service = pacs.start(settings, app.state.pipeline)
        app.state.pacs = pacs_service.ingest
        if service_metrics is not None and pacs_service.outbox is not None:
            service_metrics.watch_results(pacs_service.outbox.counts)
        try:
            yield
        finally:
            await pacs_service.stop()
            if watcher is not None:
                watcher.cancel()
            await registry.close()
            memory.release_frozen_objects()

    return lifespan


def _add_middleware(app: FastAPI, settings: Settings, service_metrics: ServiceMetrics | None) -> None:
    # Added innermost first; a request meets CORS, then request id / metrics / access log, then API keys,
    # then the shutdown gate, then the body limit.
    api_keys = configured_keys(settings)  # an unreadable keys file stops start-up: never run open by mistake
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ShutdownMiddleware, gate=app.state.shutdown)
    if api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=api_keys, protect_probes=settings.protect_probes)
    app.add_middleware(RequestContextMiddleware, metrics=service_metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "X-Request-ID",
                "Content-Type",
                "Inference-Header-Content-Length",
            ],
            expose_headers=[REQUEST_ID_HEADER.decode(), "Retry-After", "Inference-Header-Content-Length"],
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service_metrics = ServiceMetrics() if settings.metrics else None
    app = FastAPI(
        title="MedScan", version="0.1.0", description=DESCRIPTION, lifespan=_lifespan(settings, service_metrics)
    )
    app.state.settings = settings
    app.state.metrics = service_metrics
    app.state.shutdown = ShutdownGate()
    _add_middleware(app, settings, service_metrics)
    install_error_handlers(app)
    routers = (predict, explain, models, health, tf_serving, kserve_v2, dicomweb, admin, web)
    for module in (*routers, metrics) if service_metrics else routers:
        app.include_router(module.router)
    app.mount(web.STATIC_PATH, web.static_files(), name="static")
    return app


app = create_app()

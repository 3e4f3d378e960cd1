"""`medscan serve`: start the service with the settings from the environment; `medscan predict`: score files
and folders (app/batch.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.settings import InvalidSettings, get_settings

GRACEFUL_TIMEOUT_S = 15  # in-flight requests get this long after the drain; Kubernetes' default grace is 30 s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medscan", description="MedScan medical-image screening service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve every model under the models folder")
    serve.add_argument("--host", default=None, help="default: MEDSCAN_HOST or 0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default: MEDSCAN_PORT or 8000")
    serve.add_argument("--workers", type=int, default=None, help="default: MEDSCAN_WORKERS or 1")
    commands.add_parser("predict", add_help=False, help="score files and folders into a table (medscan predict --help)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "predict":
        from app import batch

        return batch.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    import uvicorn

    try:
        settings = get_settings()
    except InvalidSettings as error:
        print(f"medscan: cannot start: {error}", file=sys.stderr)
        return 2
    workers = args.workers or settings.workers
    options: dict[str, Any] = dict(
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level,
        loop="auto",
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
        # uvicorn's default (5 s) equals httpx's pool expiry: a connection reused just as the server closed it
        # ended in a client ReadError (3 of 20,000 requests in benchmarks/endurance.py)
        timeout_keep_alive=settings.keep_alive_s,
        access_log=False,
        http="app.api.http_protocol:GuardedHttpToolsProtocol",  # time and size limits on headers and bodies
        limit_concurrency=settings.max_connections,
    )  # our request middleware logs each request, with its id
    from app.api import server

    if workers > 1:  # uvicorn's process manager; each worker loads the app and drains on SIGTERM
        server.run_workers(uvicorn.Config("app.main:app", workers=workers, **options))
        return 0
    from app.main import create_app

    app = create_app(settings)
    single = server.DrainingServer(
        uvicorn.Config(app, **options), drain_s=settings.shutdown_drain_s, on_drain=app.state.shutdown.begin
    )
    single.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

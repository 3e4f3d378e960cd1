"""MedScan on Ray Serve: the same FastAPI app as ingress, in several replicas on a Ray cluster.

    ray start --head --node-ip-address 127.0.0.1          # and `ray start --address <head>:6379` on others
    serve run deploy.ray.medscan_app:app                  # or: serve deploy deploy/ray/serve_config.yaml

Each replica is a whole MedScan service (models loaded and warmed by its lifespan, dynamic batching
inside the replica); Ray's proxy spreads requests over the replicas. Settings come from the same
MEDSCAN_* environment variables (set them in the runtime environment). Optional: `pip install -e
".[ray]"`; the plain service never imports Ray.
"""

from __future__ import annotations

import os

from ray import serve

from app.main import create_app

REPLICAS = int(os.environ.get("MEDSCAN_RAY_REPLICAS", "2"))
CPUS_PER_REPLICA = float(os.environ.get("MEDSCAN_RAY_CPUS_PER_REPLICA", "1"))

fastapi_app = create_app()


@serve.deployment(
    num_replicas=REPLICAS,
    ray_actor_options={"num_cpus": CPUS_PER_REPLICA},
    health_check_period_s=10,
    graceful_shutdown_timeout_s=20,
)
@serve.ingress(fastapi_app)
class MedScan:
    """The FastAPI app is the deployment; Ray runs its lifespan in each replica."""


app = MedScan.bind()

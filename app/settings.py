"""All service settings, read from the environment (prefix MEDSCAN_) in one place."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from app.pacs.routing import DEFAULT_ROUTES, Route
from app.runtime.version_policy import VersionPolicy

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDSCAN_", env_file=".env", extra="ignore")

    def decode_threads_count(self) -> int:
        from app.runtime.decode_budget import default_decode_threads
        from app.runtime.tf_runtime import available_cores

        return self.decode_threads or default_decode_threads(available_cores())

    def decode_memory_bytes(self) -> int:
        from app.runtime.decode_budget import default_budget_bytes

        return self.decode_memory_mb * 2**20 if self.decode_memory_mb else default_budget_bytes()

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="folder of <disease>/<version>/ SavedModels")
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest request body, checked while streaming")
    spool_memory_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="an image request's body is kept in memory up to this size while it arrives, beyond it in a "
        "temporary file (app/api/spool.py)",
    )
    spool_dir: Path | None = Field(None, description="where bodies beyond spool_memory_bytes wait (default: TMPDIR)")
    max_image_pixels: int = Field(
        50_000_000, gt=0, description="largest image (width x height), checked before decoding"
    )
    inline_decode_max_pixels: int = Field(
        65_536, ge=0, description="images up to this size decode on the event loop, larger ones in a thread"
    )
    max_images_per_request: int = Field(32, ge=1, description="repeated `file` parts accepted in one request")
    modality_check: bool = Field(
        True,
        description="load the latest <models>/_modality/<version>/ at start-up and answer 'wrong kind of image' by "
        "it (app/runtime/modality_check.py); false: by each model's own feature distance, as before",
    )
    dicom_routes: list[Route] = Field(
        default_factory=lambda: list(DEFAULT_ROUTES),
        description="which models answer a DICOM instance (STOW-RS, C-STORE), as JSON: rules on Modality, "
        "BodyPartExamined and SeriesDescription naming a kind of image (app/pacs/routing.py)",
    )
    results_dicomweb_url: str | None = Field(
        None, description="send each answer's DICOM SR to this DICOMweb server by STOW-RS (e.g. a PACS's /dicom-web)"
    )
    results_cstore: str | None = Field(None, description="or to this DICOM node by C-STORE: AE_TITLE@host:port")
    results_outbox_dir: Path = Field(
        Path("results-outbox"), description="where SRs wait until the PACS has taken them (durable: keep it on disk)"
    )
    results_overlays: bool = Field(
        False, description="also send each answer's Grad-CAM overlay as a DICOM Secondary Capture, beside its SR"
    )
    results_poll_s: float = Field(1.0, gt=0, description="how often the outbox tries what is due")
    dicom_port: int | None = Field(None, ge=1, le=65535, description="start a C-STORE SCP on this port")
    dicom_host: str = Field("0.0.0.0", description="the C-STORE SCP's listen address")
    dicom_ae_title: str = Field("MEDSCAN", max_length=16, description="MedScan's AE title (SCP, and calling C-STORE)")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line, with request ids")
    prevalence: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=dict,
        description="this clinic's share of disease per model, as JSON: {\"<disease>\": 0.2}; each answer's "
        "P(infected) is moved to it from the share its calibration was fitted at (a request's `prevalence` wins)",
    )
    # Versions and hot reload (TensorFlow Serving's model_version_policy and file-system polling).
    version_policy: VersionPolicy = Field(VersionPolicy.LATEST, description="latest N, all, or specific versions")
    version_policy_latest: int = Field(1, ge=1, description="N of the `latest` policy")
    version_policy_versions: dict[str, list[int]] = Field(
        default_factory=dict, description='the `specific` policy, per disease, as JSON: {"<disease>": [3, 4]}'
    )
    model_poll_interval_s: float = Field(
        10.0,
        ge=0,
        description="look for new, changed or removed version folders this often; 0 = only at start-up "
        "and on POST /admin/reload",
    )
    drain_timeout_s: float = Field(30.0, gt=0, description="longest wait for a retired version's in-flight requests")
    # Access control.
    api_keys: list[SecretStr] = Field(
        default_factory=list, description='accepted API keys, as JSON: ["key1", "key2"]; none = no access control'
    )
    api_keys_file: Path | None = Field(None, description="a file of API keys, one per line (# comments)")
    protect_probes: bool = Field(False, description="require a key for /health, /v2/health and /metrics too")
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS, as JSON; none by default"
    )
    metrics: bool = Field(True, description="serve Prometheus metrics at /metrics")
    shutdown_drain_s: float = Field(
        2.0,
        ge=0,
        description="after SIGTERM, answer new requests 503 (and readiness 503) this long before closing, "
        "so load balancers move away; in-flight requests always finish",
    )
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes; each loads every model")
    keep_alive_s: float = Field(
        75.0,
        gt=0,
        description="how long an idle keep-alive connection stays open; longer than clients' and load balancers' "
        "own (httpx 5 s, aiohttp 15 s, AWS ALB 60 s), so that the server never closes one as a client reuses it",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="408 and close when a request's line and headers are not complete this long after "
        "their first byte (or after the connection opened): slow clients cannot hold connections",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="408 and close when a declared body has not fully arrived this long after the headers"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="431 and close when the request line and headers pass this many bytes"
    )
    max_connections: int = Field(
        1000, ge=1, description="open connections (and tasks) beyond which uvicorn answers 503 (its limit_concurrency)"
    )
    decode_memory_mb: int | None = Field(
        None,
        gt=0,
        description="memory for decoding images at once (app/runtime/decode_budget.py); unset: 70% of what the "
        "process may still use once its models are loaded (the container's cgroup limit, else the machine's memory)",
    )
    decode_threads: int = Field(
        0,
        ge=0,
        description="large images (above inline_decode_max_pixels) decoded at once; 0: every core but one, so "
        "that small requests keep a core while large ones decode",
    )
    decode_wait_s: float = Field(
        5.0, ge=0, description="how long an image waits for decode memory before 503 with Retry-After"
    )
    batching: bool = Field(True, description="gather concurrent requests for one model into one call")
    max_batch_size: int = Field(32, ge=1)
    max_batch_pixels: int = Field(
        32 * 224 * 224,
        ge=1,
        description="a model's batch holds at most this many input pixels (views included): fewer images of a "
        "large input, whose activations would otherwise take GBs",
    )
    batch_timeout_ms: float = Field(0.0, ge=0, description="extra wait for a fuller batch; 0 = take what is queued")
    batch_gather_ms: float = Field(
        5.0, ge=0, description="longest wait for requests already admitted and being decoded; 0 = none"
    )
    max_queue: int = Field(256, ge=1, description="requests waiting per model before 503 + Retry-After")
    tf_intra_op_threads: int = Field(
        0,
        ge=0,
        description="TensorFlow threads per op; 0 = chosen from the cores available (cgroup quota included) and "
        "the models' sizes: all but one core when every model is light (<= 64x64 pixels per image), so that the "
        "event loop keeps one, else every core (app/runtime/tf_runtime.py)",
    )
    tf_inter_op_threads: int = Field(1, ge=0, description="TensorFlow ops run at once; 0 = TensorFlow's choice")


class InvalidSettings(Exception):
    """A MEDSCAN_* value the service cannot start with; the message names the variable."""


ENV_PREFIX = "MEDSCAN_"


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, or InvalidSettings naming each bad variable and why."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [f"{ENV_PREFIX}{str(item['loc'][0]).upper()}: {item['msg']}" if item["loc"] else str(item["msg"])
                    for item in error.errors()]  # fmt: skip
        raise InvalidSettings("; ".join(problems)) from None
    except SettingsError as error:  # a list or mapping that is not JSON
        field = str(error).split('"')[1] if '"' in str(error) else ""
        raise InvalidSettings(f"{ENV_PREFIX}{field.upper()}: not valid JSON ({error})") from None

"""All service settings, read from the environment (prefix MEDSCAN_) in one place."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDSCAN_", env_file=".env", extra="ignore")

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="folder of <disease>/<version>/ SavedModels")
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest request body, checked while streaming")
    max_image_pixels: int = Field(50_000_000, gt=0, description="largest image (width x height), checked before decoding")
    inline_decode_max_pixels: int = Field(
        65_536, ge=0, description="images up to this size decode on the event loop, larger ones in a thread"
    )
    max_images_per_request: int = Field(32, ge=1, description="repeated `file` parts accepted in one request")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes; each loads every model")
    batching: bool = Field(True, description="gather concurrent requests for one model into one call")
    max_batch_size: int = Field(32, ge=1)
    batch_timeout_ms: float = Field(0.0, ge=0, description="extra wait for a fuller batch; 0 = take what is queued")
    batch_gather_ms: float = Field(
        5.0, ge=0, description="longest wait for requests already admitted and being decoded; 0 = none"
    )
    max_queue: int = Field(256, ge=1, description="requests waiting per model before 503 + Retry-After")
    tf_intra_op_threads: int = Field(
        0, ge=0, description="TensorFlow threads per op; 0 = one per core. 1 on 2 cores suits small models "
        "(<= 64 px), whose requests cost the event loop more than the model: it leaves a core to the loop",
    )
    tf_inter_op_threads: int = Field(1, ge=0, description="TensorFlow ops run at once; 0 = TensorFlow's choice")


@lru_cache
def get_settings() -> Settings:
    return Settings()

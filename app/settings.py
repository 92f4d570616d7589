"""Service settings: environment variables prefixed ``DETECTOR_`` (docs/operations.md has the table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.backends import Backend
from model.runtime import Runtime

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DETECTOR_", frozen=True)

    weights: Path = DEFAULT_WEIGHTS
    device: str = "auto"
    # auto on CPU: the derived int8 network (VNNI/AMX CPUs), else bf16 (native-bf16 CPUs), else
    # ONNX Runtime fp32; eager fp16 on CUDA.
    backend: Backend = "auto"
    # The prediction path: torch (every backend, CPU or GPU) or numpy (the int8 network through
    # OpenVINO, no torch: the CPU image); auto: torch where it is installed, else numpy.
    runtime: Runtime = "auto"
    # Scores through the card's calibration (the share of detections at a score that are right),
    # where the card has one; false: the network's raw scores.
    calibrated_scores: bool = True
    # The network's input side in pixels, a multiple of 32; 0: the card's (docs/model.md has the
    # sweep on val).
    input_size: Annotated[int, Field(ge=0, multiple_of=32)] = 0
    # Flip test-time augmentation by default (a request's ?flip= overrides it): +0.02 val mAP for
    # twice the network's time (docs/model.md).
    flip: bool = False
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    iou_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.45
    max_detections: Annotated[int, Field(ge=1, le=1000)] = 100
    max_upload_bytes: Annotated[int, Field(ge=1)] = 20 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    max_images_per_request: Annotated[int, Field(ge=1)] = 16
    # Bounds on what one request, and all of them together, may cost (docs/operations.md, "Limits").
    max_request_pixels: Annotated[int, Field(ge=1)] = 160_000_000
    # What the images being decoded at once may take together, in decoded bytes (it replaces
    # DECODE_PIXEL_BUDGET: 80 million pixels at 13 bytes each was about the same).
    decode_budget_bytes: Annotated[int, Field(ge=1)] = 1024 * 1024 * 1024
    decode_timeout_seconds: Annotated[float, Field(gt=0.0)] = 10.0
    decode_threads: Annotated[int, Field(ge=1)] = 4
    # A request holds an in-flight slot once its body is in; while the body arrives it holds an
    # upload slot: at most max_uploads at once, holding upload_budget_bytes of body together, and
    # max_uploads_per_client from one address (0, the default: no cap, since behind a proxy or NAT,
    # or from one Frigate with many cameras, every client has the same address).
    max_inflight_requests: Annotated[int, Field(ge=1)] = 32
    max_uploads: Annotated[int, Field(ge=1)] = 256
    upload_budget_bytes: Annotated[int, Field(ge=1)] = 640 * 1024 * 1024
    max_uploads_per_client: Annotated[int, Field(ge=0)] = 0
    body_timeout_seconds: Annotated[float, Field(gt=0.0)] = 60.0
    # After its first upload_grace_seconds a body must average this rate or get 408 (0: no minimum).
    min_upload_bytes_per_second: Annotated[float, Field(ge=0.0)] = 10_000.0
    upload_grace_seconds: Annotated[float, Field(ge=0.0)] = 5.0
    # Read by the HTTP protocol (app.protocol), before a request reaches the app.
    header_timeout_seconds: Annotated[float, Field(gt=0.0)] = 10.0
    max_header_bytes: Annotated[int, Field(ge=1024)] = 65_536
    max_url_bytes: Annotated[int, Field(ge=256)] = 16_384
    api_key: SecretStr | None = None
    # Dynamic batching: images from concurrent requests share one forward pass. With no timeout
    # (the default) a batch is whatever queued while the previous one ran, so a lone request
    # never waits; a timeout makes the first image wait that long for company.
    max_batch_size: Annotated[int, Field(ge=1)] = 16
    batch_timeout_ms: Annotated[float, Field(ge=0.0)] = 0.0
    # The longest a batch should take: batches are cut to fit it by the measured time per image
    # (a one-image request waits behind at most one batch, then shares the next; 0: no budget).
    batch_latency_budget_ms: Annotated[float, Field(ge=0.0)] = 40.0
    max_queue_images: Annotated[int, Field(ge=1)] = 256
    # Decode JPEGs in the batcher, a batch at a time, on the inference device (nvJPEG on CUDA)
    # instead of one by one on CPU threads. Off until measured on a GPU (docs/benchmarks.md).
    device_decode: bool = False
    retry_after_seconds: Annotated[int, Field(ge=1)] = 1
    # The most predictions one DeepStack answer carries, highest confidence first: Frigate's
    # deepstack detector copies them into a fixed array of 20 rows and fails on a 21st.
    deepstack_max_predictions: Annotated[int, Field(ge=1, le=1000)] = 20
    # CPU threads for the network's forward pass (0: one per core).
    torch_threads: Annotated[int, Field(ge=0)] = 0
    # After SIGTERM: wait up to drain_timeout for in-flight requests, then drain_delay more
    # (time for a load balancer to see /readyz fail) before the server stops.
    drain_timeout_seconds: Annotated[float, Field(ge=0.0)] = 25.0
    drain_delay_seconds: Annotated[float, Field(ge=0.0)] = 0.5
    log_level: str = "info"
    # HTTP front processes beside one inference engine process (python -m app); 0: one process
    # that does everything; -1 (auto): 0 without an NVIDIA device (on the 2-core CPU more
    # processes cost more than they gave, README "Sizing the fronts"), half the cores beside one.
    fronts: Annotated[int, Field(ge=-1, le=256)] = -1
    # Set by the launcher for its fronts: the engine's socket. Empty: the predictor runs in-process.
    engine_socket: str = ""
    # An engine that has not answered a batch (or the launcher's ping) for this long is hung:
    # the fronts fail readiness and the launcher kills it and exits 1.
    engine_timeout_seconds: Annotated[float, Field(gt=0.0)] = 30.0
    # Origins allowed to call the API from a browser page served elsewhere (CORS); none by
    # default. A comma-separated list or a JSON array; "*" allows any.
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value() else value

"""A typed client for the VOC object detector service: ``DetectorClient`` / ``AsyncDetectorClient``."""

from detector_client.client import AsyncDetectorClient, DetectorClient, DetectorError, RetryPolicy
from detector_client.models import Box, Detection, DetectResponse, ImageResult

__all__ = [
    "AsyncDetectorClient",
    "Box",
    "DetectResponse",
    "Detection",
    "DetectorClient",
    "DetectorError",
    "ImageResult",
    "RetryPolicy",
]

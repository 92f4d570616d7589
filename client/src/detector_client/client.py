"""Sync and async clients for ``POST /detect``.

Images may be paths, bytes or PIL images. They are packed into requests of at most the server's
image limit (read once from ``GET /model``) and of at most its body limit, sent with a bounded
concurrency, and retried on 503 (and on connection failures) after the server's ``Retry-After``
plus jitter, a bounded number of times. Any other error raises :class:`DetectorError` with the
status and the server's ``detail``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from detector_client.answers import BoundedAnswer, card_of, error_of, results_of
from detector_client.errors import DetectorError
from detector_client.models import ImageResult
from detector_client.uploads import ImageInput, Upload, pack, to_upload

__all__ = [
    "AsyncDetectorClient",
    "DetectorClient",
    "DetectorError",
    "ImageInput",
    "RetryPolicy",
    "Upload",
    "pack",
]

DEFAULT_URL = "http://127.0.0.1:8000"
# 16 images x 1,000 detections is about 2.5 MB of JSON; an answer past this is no answer of ours.
DEFAULT_MAX_ANSWER_BYTES = 64 * 2**20


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3  # attempts after the first
    max_delay: float = 30.0  # seconds, whatever Retry-After says
    jitter: float = 0.25  # up to this fraction added at random

    def delay(self, attempt: int, retry_after: str | None) -> float:
        base = float(retry_after) if retry_after and retry_after.strip().isdigit() else 0.5 * 2**attempt
        return min(self.max_delay, base) * (1 + random.uniform(0, self.jitter))


def _params(
    score_threshold: float | None,
    iou_threshold: float | None,
    max_detections: int | None,
    classes: Sequence[str] | None,
) -> dict[str, str]:
    params = {
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "max_detections": max_detections,
        "classes": ",".join(classes) if classes is not None else None,
    }
    return {key: str(value) for key, value in params.items() if value is not None}


def _uploads(images: ImageInput | Sequence[ImageInput]) -> list[Upload]:
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    return [to_upload(image, k) for k, image in enumerate(items)]


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _Base:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy,
        concurrency: int,
        max_images_per_request: int | None,
        max_request_bytes: int | None,
        max_answer_bytes: int,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_answer_bytes = max_answer_bytes
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry
        self.concurrency = max(1, concurrency)
        self._max_images = max_images_per_request
        self._max_bytes = max_request_bytes

    def _limits_from(self, card: dict[str, Any]) -> None:
        limits = card.get("limits", {})
        self._max_images = self._max_images or int(limits.get("max_images_per_request", 16))
        self._max_bytes = self._max_bytes or int(limits.get("max_upload_bytes", 20 * 1024 * 1024))

    def _delay_after_answer(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying a 503; None when ``response`` is the answer. Raises
        :class:`DetectorError` for any other error answer, or a 503 on the last attempt."""
        if response.status_code == 503 and attempt < self.retry.retries:
            return self.retry.delay(attempt, response.headers.get("retry-after"))
        if response.is_error:
            raise error_of(response)
        return None

    def _delay_after_failure(self, attempt: int, error: httpx.TransportError) -> float:
        """Seconds to wait before retrying after a connection failure; raises on the last attempt."""
        if attempt == self.retry.retries:
            raise DetectorError(0, f"could not reach {self.url}: {error!r}") from error
        return self.retry.delay(attempt, None)

    def _each_plan(
        self, images: Sequence[ImageInput]
    ) -> tuple[list[Upload | DetectorError], list[list[int]]]:
        """For ``detect_each``: every image read (or the error of reading it), and the requests the
        readable ones are packed into, as lists of their indices."""
        uploads: list[Upload | DetectorError] = []
        for k, image in enumerate(images):
            try:
                uploads.append(to_upload(image, k))
            except (OSError, TypeError) as exc:
                uploads.append(DetectorError(0, f"cannot read it: {exc}"))
        readable = [k for k, u in enumerate(uploads) if isinstance(u, Upload)]
        good = [u for u in uploads if isinstance(u, Upload)]
        return uploads, [[readable[i] for i in group] for group in self._groups(good)]

    @staticmethod
    def _fails_alone(error: DetectorError, group: list[int]) -> bool:
        """Whether a failed request's error is every image's (so no image-by-image retry)."""
        return len(group) == 1 or error.status in (0, 401, 503)

    def _groups(self, uploads: Sequence[Upload]) -> list[list[int]]:
        assert self._max_images is not None and self._max_bytes is not None
        return pack(uploads, self._max_images, self._max_bytes)


class DetectorClient(_Base):
    """``with DetectorClient(url) as client: results = client.detect(images)``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        concurrency: int = 4,
        max_images_per_request: int | None = None,
        max_request_bytes: int | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            api_key,
            timeout,
            retry,
            concurrency,
            max_images_per_request,
            max_request_bytes,
            max_answer_bytes,
        )
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=_headers(api_key), transport=transport
        )
        self._limits_lock = threading.Lock()

    def __enter__(self) -> DetectorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def model(self) -> dict[str, Any]:
        """The service's model card (``GET /model``)."""
        return card_of(self._send("GET", "/model"))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retry.retries + 1):
            try:
                with self._http.stream(method, path, **kwargs) as streamed:
                    answer = BoundedAnswer(streamed, self.timeout, self.max_answer_bytes)
                    for chunk in streamed.iter_bytes():
                        answer.add(chunk)
                    response = answer.whole()
            except httpx.TransportError as exc:
                delay = self._delay_after_failure(attempt, exc)
            else:
                answer_delay = self._delay_after_answer(attempt, response)
                if answer_delay is None:
                    return response
                delay = answer_delay
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _ensure_limits(self) -> None:
        with self._limits_lock:
            if self._max_images is None or self._max_bytes is None:
                self._limits_from(self.model())

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str] | None = None,
    ) -> list[ImageResult]:
        """One :class:`ImageResult` per image, in order."""
        uploads = _uploads(images)
        if not uploads:
            return []
        self._ensure_limits()
        params = _params(score_threshold, iou_threshold, max_detections, classes)
        groups = self._groups(uploads)
        results: list[ImageResult | None] = [None] * len(uploads)

        def run(group: list[int]) -> None:
            files = [("image", (uploads[k].filename, uploads[k].data)) for k in group]
            found = results_of(self._send("POST", "/detect", params=params, files=files), len(group))
            for k, result in zip(group, found, strict=True):
                results[k] = result

        if len(groups) == 1:
            run(groups[0])
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(groups))) as pool:
                list(pool.map(run, groups))
        return [r for r in results if r is not None]

    def detect_each(
        self, images: Sequence[ImageInput], **options: Any
    ) -> Iterator[tuple[int, ImageResult | DetectorError]]:
        """Like :meth:`detect` for a long list, but yielding ``(index, result or error)`` as
        requests finish; a request refused for one bad image is retried image by image, so only
        that image gets the error."""
        self._ensure_limits()
        uploads, groups = self._each_plan(images)
        for k, upload in enumerate(uploads):
            if isinstance(upload, DetectorError):
                yield k, upload

        def run(group: list[int]) -> list[tuple[int, ImageResult | DetectorError]]:
            batch = [uploads[k] for k in group]
            try:
                return list(zip(group, self.detect(batch, **options), strict=True))
            except DetectorError as exc:
                if self._fails_alone(exc, group):
                    return [(k, exc) for k in group]
                return [item for k in group for item in run([k])]

        with ThreadPoolExecutor(self.concurrency) as pool:
            for done in pool.map(run, groups):
                yield from done


class AsyncDetectorClient(_Base):
    """``async with AsyncDetectorClient(url) as client: results = await client.detect(images)``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        concurrency: int = 4,
        max_images_per_request: int | None = None,
        max_request_bytes: int | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            api_key,
            timeout,
            retry,
            concurrency,
            max_images_per_request,
            max_request_bytes,
            max_answer_bytes,
        )
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, headers=_headers(api_key), transport=transport
        )
        self._limit = asyncio.Semaphore(self.concurrency)

    async def __aenter__(self) -> AsyncDetectorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def model(self) -> dict[str, Any]:
        return card_of(await self._send("GET", "/model"))

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retry.retries + 1):
            try:
                async with self._limit, self._http.stream(method, path, **kwargs) as streamed:
                    answer = BoundedAnswer(streamed, self.timeout, self.max_answer_bytes)
                    async for chunk in streamed.aiter_bytes():
                        answer.add(chunk)
                    response = answer.whole()
            except httpx.TransportError as exc:
                delay = self._delay_after_failure(attempt, exc)
            else:
                answer_delay = self._delay_after_answer(attempt, response)
                if answer_delay is None:
                    return response
                delay = answer_delay
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str] | None = None,
    ) -> list[ImageResult]:
        """One :class:`ImageResult` per image, in order."""
        uploads = _uploads(images)
        if not uploads:
            return []
        if self._max_images is None or self._max_bytes is None:
            self._limits_from(await self.model())
        params = _params(score_threshold, iou_threshold, max_detections, classes)

        async def run(group: list[int]) -> list[ImageResult]:
            files = [("image", (uploads[k].filename, uploads[k].data)) for k in group]
            return results_of(await self._send("POST", "/detect", params=params, files=files), len(group))

        found = await asyncio.gather(*(run(group) for group in self._groups(uploads)))
        return [result for group in found for result in group]

    async def detect_each(
        self, images: Sequence[ImageInput], **options: Any
    ) -> AsyncIterator[tuple[int, ImageResult | DetectorError]]:
        """``async for index, result_or_error in client.detect_each(images)``: as the sync client's,
        yielding as requests finish; a request refused for one bad image is retried image by image,
        so only that image gets the error."""
        if self._max_images is None or self._max_bytes is None:
            self._limits_from(await self.model())
        uploads, groups = self._each_plan(images)
        for k, upload in enumerate(uploads):
            if isinstance(upload, DetectorError):
                yield k, upload

        async def run(group: list[int]) -> list[tuple[int, ImageResult | DetectorError]]:
            batch = [uploads[k] for k in group]
            try:
                return list(zip(group, await self.detect(batch, **options), strict=True))
            except DetectorError as exc:
                if self._fails_alone(exc, group):
                    return [(k, exc) for k in group]
                alone = await asyncio.gather(*(run([k]) for k in group))
                return [item for found in alone for item in found]

        for finished in asyncio.as_completed([run(group) for group in groups]):
            for item in await finished:
                yield item

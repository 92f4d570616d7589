"""Reading a /detect request body: bounded while it is read, then split into image parts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from app.errors import ClientError
from app.imaging.decoding import SUPPORTED, SUPPORTED_MEDIA_TYPES
from app.imaging.multipart import MultipartError, TooManyParts, split_multipart

# Parts not named "image" that a multipart body may also carry (and that are ignored).
MAX_OTHER_PARTS = 64


class UploadError(ClientError):
    """A request body that is not an acceptable upload: 400, 408, 413 or 415."""


@dataclass(frozen=True)
class ImagePart:
    index: int  # 0-based position among the image parts
    filename: str | None
    data: bytes

    @property
    def label(self) -> str:
        name = f" ({self.filename!r})" if self.filename else ""
        return f"image part {self.index}{name}"


@dataclass(frozen=True)
class BodyLimits:
    """What a body must keep to while it arrives."""

    max_bytes: int
    timeout_s: float = 60.0  # the whole body, from the request's start
    min_rate: float = 0.0  # bytes/s the body must average after the grace (0: no minimum)
    grace_s: float = 5.0


class BodyReader:
    """A request body read in bounded steps: :meth:`read_until` a prefix, :meth:`read_all` the rest.

    Refuses with 413 as soon as the body passes ``max_bytes`` (never read unbounded); with 408
    when it has not all arrived ``timeout_s`` after the read began, or when it falls below
    ``min_rate`` bytes/s once ``grace_s`` has passed (a slow drip holds nothing for long); with
    503 when ``abort`` is set (the service is shutting down and waited long enough); with 499
    when the client hangs up."""

    def __init__(
        self,
        request: Request,
        limits: BodyLimits,
        abort: asyncio.Event | None = None,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise UploadError(
                413, f"request body is {int(declared):,} bytes, over the limit of {limits.max_bytes:,}"
            )
        self.limits = limits
        self.abort = abort
        self.on_chunk = on_chunk  # told each chunk's size as it arrives; raises to refuse
        self._chunks: list[bytes] = []
        self.size = 0
        self._stream = request.stream().__aiter__()
        self._done = False
        self._start = time.monotonic()

    def _deadline(self) -> tuple[float, str]:
        limits = self.limits
        deadline, why = (
            self._start + limits.timeout_s,
            f"within {limits.timeout_s:g} s (DETECTOR_BODY_TIMEOUT_SECONDS)",
        )
        if limits.min_rate > 0:
            rate_deadline = self._start + limits.grace_s + self.size / limits.min_rate
            if rate_deadline < deadline:
                deadline = rate_deadline
                why = (
                    f"at {limits.min_rate:,.0f} bytes/s or faster after its first {limits.grace_s:g} s "
                    "(DETECTOR_MIN_UPLOAD_BYTES_PER_SECOND)"
                )
        return deadline, why

    async def _next(self) -> bool:
        """Read one more chunk; False at the body's end."""
        deadline, why = self._deadline()
        chunk_future: asyncio.Future[bytes] = asyncio.ensure_future(self._stream.__anext__())
        futures: list[asyncio.Future[Any]] = [chunk_future]
        aborted = None
        if self.abort is not None:
            aborted = asyncio.ensure_future(self.abort.wait())
            futures.append(aborted)
        try:
            done, _ = await asyncio.wait(
                futures, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
        if chunk_future in done:
            try:
                chunk = chunk_future.result()
            except StopAsyncIteration:
                return False
            except ClientDisconnect as exc:
                # Nobody is left to answer; 499 (as nginx logs it) so it counts as the client's doing.
                raise UploadError(
                    499, f"the client closed the connection after {self.size:,} bytes of its body"
                ) from exc
            self.size += len(chunk)
            if self.size > self.limits.max_bytes:
                raise UploadError(
                    413,
                    f"request body passed the limit of {self.limits.max_bytes:,} bytes; send a smaller image",
                )
            if chunk:
                if self.on_chunk is not None:
                    self.on_chunk(len(chunk))
                self._chunks.append(chunk)
            return True
        if aborted is not None and aborted in done:
            raise UploadError(
                503,
                "the service is shutting down and the body had not all arrived; send it to another instance",
                {"Connection": "close", "Retry-After": "1"},
            )
        raise UploadError(
            408,
            f"the request body did not arrive {why}; {self.size:,} bytes came",
            {"Connection": "close"},
        )

    async def read_until(self, size: int) -> bytes:
        """At least the first ``size`` bytes (fewer only if the body is shorter)."""
        while not self._done and self.size < size:
            self._done = not await self._next()
        return b"".join(self._chunks)

    async def read_all(self) -> bytes:
        while not self._done:
            self._done = not await self._next()
        body = b"".join(self._chunks)
        self._chunks = [body] if body else []
        return body


# Text fields are kept up to this many characters (they carry options such as min_confidence).
MAX_FIELD_CHARS = 1024


def image_parts(
    request: Request, body: bytes, max_images: int
) -> tuple[list[ImagePart], dict[str, list[str]]]:
    """The request's images: every multipart ``image`` file part, or the raw body as one image;
    and the multipart text fields (every value of each name, in order)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        try:
            form = split_multipart(body, content_type, max_images + MAX_OTHER_PARTS)
        except TooManyParts as exc:
            detail = f"too many parts in one request; the limit is {max_images} images"
            raise UploadError(413, detail) from exc
        except MultipartError as exc:
            raise UploadError(400, f"malformed multipart body: {exc}") from exc
        parts: list[ImagePart] = []
        other: list[str] = []
        fields: dict[str, list[str]] = {}
        for part in form:
            if part.name != "image":
                other.append(part.name)
                if part.filename is None:
                    text = part.data[:MAX_FIELD_CHARS].decode("utf-8", errors="replace")
                    fields.setdefault(part.name, []).append(text)
                continue
            if part.filename is None:
                raise UploadError(
                    400,
                    f"image part {len(parts)} is a text field; send it as a file "
                    "(e.g. curl -F image=@photo.jpg)",
                )
            parts.append(ImagePart(len(parts), part.filename, part.data))
        if not parts:
            seen = f"; got parts {other}" if other else ""
            raise UploadError(
                400, f"no file part named 'image'{seen}; send multipart/form-data with image=@FILE"
            )
        if len(parts) > max_images:
            raise UploadError(413, f"{len(parts)} images in one request; the limit is {max_images} images")
        return parts, fields
    if media_type in SUPPORTED_MEDIA_TYPES or media_type == "application/octet-stream":
        if not body:
            raise UploadError(400, "request body is empty; send the image bytes")
        return [ImagePart(0, None, body)], {}
    if not media_type:
        raise UploadError(
            415,
            "no Content-Type; send multipart/form-data with image parts or a raw image/jpeg, "
            "image/png, image/webp or image/bmp body",
        )
    raise UploadError(
        415,
        f"Content-Type {media_type!r} is not accepted; send multipart/form-data with image parts "
        f"or a raw {SUPPORTED} body (image/jpeg, image/png, image/webp, image/bmp)",
    )

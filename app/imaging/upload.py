"""Reading a /detect request body: bounded while it is read, then split into image parts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

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


async def read_body(request: Request, limit: int, timeout: float = 60.0) -> bytes:
    """The body, refusing with 413 as soon as it passes ``limit`` bytes (never read unbounded) and
    with 408 when it has not all arrived ``timeout`` seconds after the request began."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"request body is {int(declared):,} bytes, over the limit of {limit:,}")
    chunks: list[bytes] = []
    size = 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise UploadError(
                    413, f"request body passed the limit of {limit:,} bytes; send a smaller image"
                )
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), timeout)
    except ClientDisconnect as exc:
        # Nobody is left to answer; 499 (as nginx logs it) so that it counts as the client's doing.
        raise UploadError(499, f"the client closed the connection after {size:,} bytes of its body") from exc
    except TimeoutError as exc:
        raise UploadError(
            408,
            f"the request body did not arrive within {timeout:g} s (DETECTOR_BODY_TIMEOUT_SECONDS); "
            f"{size:,} bytes came",
            {"Connection": "close"},
        ) from exc
    return b"".join(chunks)


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

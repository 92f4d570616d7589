"""Reading an upload: the body bounded in bytes and time, then split into image parts and fields."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.requests import Request

from app.imaging.upload import BodyLimits, BodyReader, ImagePart, UploadError, image_parts


def request_of(body: bytes, content_type: str | None, chunks: int = 1, delay: float = 0.0) -> Request:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    pieces = [body[k::chunks] for k in range(chunks)] if chunks > 1 else [body]
    sent = iter(pieces)

    async def receive():
        await asyncio.sleep(delay)
        piece = next(sent, None)
        return {"type": "http.request", "body": piece or b"", "more_body": piece is not None}

    scope = {"type": "http", "method": "POST", "path": "/detect", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def multipart(files, data=None) -> tuple[bytes, str]:
    built = httpx.Request("POST", "http://x/detect", files=files, data=data)
    return built.read(), built.headers["content-type"]


def test_image_parts_keep_order_names_and_fields():
    body, content_type = multipart(
        [("image", ("a.jpg", b"AAA", "image/jpeg")), ("image", ("b.png", b"BB", "image/png"))],
        data={"min_confidence": "0.4"},
    )
    parts, fields = image_parts(request_of(body, content_type), body, max_images=4)
    assert parts == [ImagePart(0, "a.jpg", b"AAA"), ImagePart(1, "b.png", b"BB")]
    assert fields == {"min_confidence": ["0.4"]}


def test_a_raw_body_is_one_image():
    parts, fields = image_parts(request_of(b"\xff\xd8xyz", "image/jpeg"), b"\xff\xd8xyz", max_images=4)
    assert parts == [ImagePart(0, None, b"\xff\xd8xyz")] and fields == {}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"", "image/jpeg", 400, "empty"),
        (b"abc", None, 415, "no Content-Type"),
        (b"abc", "text/plain", 415, "'text/plain'"),
        (b"whatever", "multipart/form-data; boundary=zz", 400, "malformed multipart"),
    ],
)
def test_bad_uploads_get_their_status(body: bytes, content_type: str | None, status: int, fragment: str):
    with pytest.raises(UploadError) as caught:
        image_parts(request_of(body, content_type), body, max_images=4)
    assert caught.value.status == status and fragment in caught.value.detail


def test_text_field_named_image_and_too_many_images_are_refused():
    body, content_type = multipart([("other", ("x.bin", b"x", "a/b"))], data={"image": "not a file"})
    with pytest.raises(UploadError, match="text field"):
        image_parts(request_of(body, content_type), body, max_images=4)
    body, content_type = multipart([("image", (f"{k}.jpg", b"x", "image/jpeg")) for k in range(5)])
    with pytest.raises(UploadError) as caught:
        image_parts(request_of(body, content_type), body, max_images=4)
    assert caught.value.status == 413


def read_body(request: Request, limit: int, timeout: float = 60.0) -> bytes:
    return asyncio.run(BodyReader(request, BodyLimits(limit, timeout)).read_all())


def test_read_body_stops_at_the_limit_while_streaming():
    body = b"x" * 10_000
    assert read_body(request_of(body, "image/jpeg", chunks=4), limit=10_000) == bytes(
        b"".join(body[k::4] for k in range(4))
    )
    with pytest.raises(UploadError) as caught:
        read_body(request_of(body, "image/jpeg", chunks=4), limit=9_999)
    assert caught.value.status == 413


def test_read_body_gives_up_on_a_body_that_does_not_arrive():
    with pytest.raises(UploadError) as caught:
        read_body(request_of(b"x" * 100, "image/jpeg", chunks=10, delay=0.05), 1000, timeout=0.2)
    assert caught.value.status == 408 and "DETECTOR_BODY_TIMEOUT_SECONDS" in caught.value.detail


def test_a_body_below_the_minimum_rate_after_the_grace_gets_408():
    limits = BodyLimits(10_000, timeout_s=5.0, min_rate=1_000.0, grace_s=0.2)
    drip = request_of(b"x" * 40, "image/jpeg", chunks=40, delay=0.05)  # 20 bytes/s
    with pytest.raises(UploadError) as caught:
        asyncio.run(BodyReader(drip, limits).read_all())
    assert caught.value.status == 408 and "DETECTOR_MIN_UPLOAD_BYTES_PER_SECOND" in caught.value.detail
    fast = request_of(b"x" * 4000, "image/jpeg", chunks=4, delay=0.05)  # 20,000 bytes/s
    assert len(asyncio.run(BodyReader(fast, limits).read_all())) == 4000


def test_an_abort_ends_a_body_still_arriving_with_503():
    async def run() -> UploadError:
        abort = asyncio.Event()
        reader = BodyReader(
            request_of(b"x" * 100, "image/jpeg", chunks=10, delay=0.1), BodyLimits(1000), abort
        )
        asyncio.get_running_loop().call_later(0.25, abort.set)
        with pytest.raises(UploadError) as caught:
            await reader.read_all()
        return caught.value

    error = asyncio.run(run())
    assert error.status == 503 and error.headers and error.headers["Connection"] == "close"


def test_read_until_reads_a_prefix_and_read_all_the_rest():
    async def run() -> tuple[bytes, bytes]:
        reader = BodyReader(request_of(bytes(range(100)), "image/jpeg", chunks=10), BodyLimits(1000))
        return await reader.read_until(25), await reader.read_all()

    prefix, whole = asyncio.run(run())
    assert 25 <= len(prefix) < 100 and whole.startswith(prefix) and len(whole) == 100


def test_each_chunk_is_told_so_a_budget_can_refuse_it():
    sizes: list[int] = []

    def on_chunk(size: int) -> None:
        sizes.append(size)
        if sum(sizes) > 50:
            raise UploadError(503, "budget")

    reader = BodyReader(request_of(b"x" * 100, "image/jpeg", chunks=10), BodyLimits(1000), on_chunk=on_chunk)
    with pytest.raises(UploadError):
        asyncio.run(reader.read_all())
    assert sum(sizes) == 60

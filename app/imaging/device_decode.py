"""JPEG decoding on the inference device, for a whole batch at once (nvJPEG on CUDA).

With ``DETECTOR_DEVICE_DECODE`` the request path only checks a JPEG's header (format, size, pixel
limit, EXIF orientation) and hands the bytes to the batcher; the inference thread then decodes
every JPEG of the batch in one ``torchvision.io.decode_jpeg(list, device=...)`` call, so on a GPU
the pixels are decoded, letterboxed and normalized without leaving the device. On CPU the same
path runs with libjpeg-turbo, which is how the tests cover it on a machine without a GPU.

nvJPEG does not apply EXIF orientation and fails a whole list for one bad file, so orientation is
applied here with tensor ops and a failed list is retried image by image: a corrupt JPEG fails
only its own request, with the same 400 the CPU decoder gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from app.imaging.decoding import DecodeError, EncodedJpeg, reason
from model.letterbox import Fitted, orient


def _bytes(jpeg: EncodedJpeg) -> Tensor:
    return torch.frombuffer(bytearray(jpeg.data), dtype=torch.uint8)


def _decode_one(jpeg: EncodedJpeg, device: torch.device) -> Tensor | DecodeError:
    try:
        pixels = decode_jpeg(_bytes(jpeg), mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        return DecodeError(
            400, f"{jpeg.label} is a truncated or corrupt JPEG image{reason(exc)}; send the whole file"
        )
    return orient(pixels, jpeg.orientation)


def decode_batch(
    images: Sequence[Tensor | Fitted | EncodedJpeg], device: torch.device
) -> list[Tensor | Fitted | DecodeError]:
    """Decoded pixels for each :class:`EncodedJpeg` (others pass through), or its error."""
    jpegs = {k: image for k, image in enumerate(images) if isinstance(image, EncodedJpeg)}
    decoded: dict[int, Tensor | DecodeError] = {}
    if jpegs:
        try:
            pixels = decode_jpeg(
                [_bytes(jpeg) for jpeg in jpegs.values()], mode=ImageReadMode.RGB, device=device
            )
            decoded = {
                k: orient(p, jpeg.orientation) for (k, jpeg), p in zip(jpegs.items(), pixels, strict=True)
            }
        except RuntimeError:  # one bad file fails the whole list: find it
            decoded = {k: _decode_one(jpeg, device) for k, jpeg in jpegs.items()}
    return [decoded[k] if isinstance(image, EncodedJpeg) else image for k, image in enumerate(images)]

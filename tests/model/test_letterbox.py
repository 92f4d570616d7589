"""Letterboxing: the long-axis reduction that keeps the resize of absurd shapes cheap."""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from model.letterbox import fit, reduce_long_axes


def test_a_very_long_axis_is_averaged_down_before_the_resize_with_nearly_the_same_result():
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, 200_000).round().to(torch.uint8)
    noise = torch.randint(0, 40, (3, 200_000), generator=generator, dtype=torch.uint8)
    tall = (ramp.expand(3, -1) // 2 + noise).reshape(3, 200_000, 1).contiguous()
    reduced = reduce_long_axes(tall, 416)
    assert reduced.shape[1] < tall.shape[1] // 10 and reduced.shape[1] >= 8 * 416
    direct = TF.resize(tall, [416, 1], antialias=True)
    fitted = fit(tall, 416).pixels
    assert fitted.shape == direct.shape == (3, 416, 1)
    assert (fitted.int() - direct.int()).abs().max() <= 2
    wide = tall.reshape(3, 1, 200_000)
    assert (fit(wide, 416).pixels.int() - TF.resize(wide, [1, 416], antialias=True).int()).abs().max() <= 2


def test_ordinary_photos_are_not_touched_by_the_long_axis_reduction():
    photo = torch.zeros(3, 6000, 8000, dtype=torch.uint8)
    assert reduce_long_axes(photo, 416) is photo

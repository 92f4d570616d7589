"""Upload slots: bounded in number, in body bytes held together, and per client when set."""

from __future__ import annotations

import pytest

from app.serving.uploads import Uploads, UploadsFull


def test_slots_are_bounded_in_number_and_per_client():
    uploads = Uploads(max_total=3, max_per_client=2)
    uploads.enter("a")
    uploads.enter("a")
    with pytest.raises(UploadsFull, match="from this client"):
        uploads.enter("a")
    uploads.enter("b")
    with pytest.raises(UploadsFull, match="DETECTOR_MAX_UPLOADS"):
        uploads.enter("c")
    uploads.leave("a")
    uploads.enter("c")
    assert uploads.count == 3 and dict(uploads.per_client) == {"a": 1, "b": 1, "c": 1}


def test_no_per_client_cap_when_zero():
    uploads = Uploads(max_total=10, max_per_client=0)
    for _ in range(10):
        uploads.enter("proxy")
    assert uploads.count == 10


def test_held_bytes_are_bounded_and_given_back():
    uploads = Uploads(max_total=10, max_per_client=0, max_bytes=100)
    uploads.enter("a")
    uploads.hold(60)
    uploads.enter("b")
    with pytest.raises(UploadsFull, match="DETECTOR_UPLOAD_BUDGET_BYTES"):
        uploads.hold(41)
    uploads.hold(40)
    uploads.leave("a", 60)
    uploads.leave("b", 40)
    assert uploads.held_bytes == 0 and uploads.count == 0 and not uploads.per_client

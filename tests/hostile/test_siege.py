"""45 s of sixteen hostile clients (every round-2 and round-3 attack, mixed) and one normal client, against
a real uvicorn serving the shipped weights with the default settings, on each runtime (numpy: the
CPU image's path)."""

from __future__ import annotations

import statistics

import pytest

from tests.support.serving import ROOT, Server
from tests.support.siege import siege

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("runtime", ["torch", "numpy"])
def test_normal_client_is_served_while_sixteen_hostile_clients_attack(runtime):
    with Server(ROOT / "weights", DETECTOR_RUNTIME=runtime) as server:
        report = siege(server, seconds=45.0, hostile_clients=16)
    print("\n" + report.summary())
    assert report.five_xx == 0
    assert set(report.normal_statuses) == {200}
    assert statistics.median(report.busy_ms) < 5 * statistics.median(report.idle_ms)
    assert report.peak_rss_mib < 3 * 1024
    assert report.ready_after == 200
    # Every kind of attack was tried, and none got past its check.
    attacked = {name for name, _ in report.hostile_statuses}
    assert len(attacked) == 18, attacked
    assert not report.hostile_errors

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from model.checkpoint import WeightsError, load_weights, save_weights
from model.config import DetectorConfig
from model.network import build_network
from tests.support.weights import make_weights


def test_round_trip_gives_the_same_outputs(tmp_path: Path):
    network = build_network(DetectorConfig(input_size=64)).eval()
    save_weights(tmp_path, network, {"epochs": 3})
    loaded = load_weights(tmp_path)
    assert loaded.config == network.config
    assert loaded.card["card"] == {"epochs": 3}
    assert loaded.version == loaded.sha256[:12] and len(loaded.sha256) == 64
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(loaded.network(images), network(images), atol=2e-2, rtol=2e-2)  # fp16 storage


def test_card_carries_the_design_fields(tmp_path: Path):
    make_weights(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    for key in (
        "name",
        "architecture",
        "classes",
        "input_size",
        "normalization",
        "decode",
        "thresholds",
        "sha256",
        "card",
        "dtype",
    ):
        assert key in meta
    assert meta["dtype"] == "float16"


def test_tampered_weights_are_refused(tmp_path: Path):
    make_weights(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"model\.safetensors: sha256 .* does not match"):
        load_weights(tmp_path)


def test_truncated_weights_are_refused(tmp_path: Path):
    make_weights(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="sha256"):
        load_weights(tmp_path)


def test_wrong_class_list_is_refused(tmp_path: Path):
    make_weights(tmp_path)
    card = tmp_path / "model.json"
    meta = json.loads(card.read_text())
    meta["classes"][0], meta["classes"][1] = meta["classes"][1], meta["classes"][0]
    card.write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="class list"):
        load_weights(tmp_path)


def test_missing_files_are_named(tmp_path: Path):
    with pytest.raises(WeightsError, match=r"model\.json: missing"):
        load_weights(tmp_path)
    make_weights(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"model\.safetensors: missing"):
        load_weights(tmp_path)


def test_a_pickle_is_never_unpickled(tmp_path: Path):
    make_weights(tmp_path)
    ran = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (ran,))

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    meta = json.loads((tmp_path / "model.json").read_text())
    import hashlib

    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # even with a matching hash
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="unreadable safetensors"):
        load_weights(tmp_path)
    assert not ran.exists()

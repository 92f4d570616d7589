"""The dependencies by use (pyproject.toml): every one pinned, the pins what is installed here, and
serving's base free of torch, CUDA and the training stack (the CPU image installs only it)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
SELF = PROJECT["name"]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)==(?P<version>[^;\s]+)(\s*;.*)?$")
GROUPS = {"base": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}


def requirements() -> list[tuple[str, str]]:
    return [(group, line) for group, lines in GROUPS.items() for line in lines if not line.startswith(SELF)]


@pytest.mark.parametrize(("group", "line"), requirements())
def test_every_dependency_is_pinned_to_what_is_installed(group, line):
    pin = PIN.match(line)
    assert pin, f"{group}: {line!r} is not pinned with =="
    try:
        installed = metadata.version(pin["name"])
    except metadata.PackageNotFoundError:
        pytest.skip(f"{pin['name']} ({group}) is not installed here")
    assert installed == pin["version"], f"{pin['name']}: pinned {pin['version']}, installed {installed}"


def test_serving_needs_neither_torch_nor_the_training_stack():
    base = {PIN.match(line)["name"].lower() for line in PROJECT["dependencies"]}  # type: ignore[index]
    heavy = {"torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "tensorboard", "matplotlib", "nncf"}
    assert not base & heavy
    assert {"torch", "torchvision"} <= {PIN.match(line)["name"] for line in GROUPS["torch"]}  # type: ignore[index]

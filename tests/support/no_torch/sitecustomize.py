"""On PYTHONPATH, makes this interpreter one without torch: what the CPU image is. Importing torch,
torchvision or the packages only the torch runtime and training use fails as if they were not
installed, and ``importlib.util.find_spec`` says they are not."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

HIDDEN = {
    "torch",
    "torchvision",
    "safetensors",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "tensorboard",
    "matplotlib",
}


class _Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Hidden())
_find_spec = importlib.util.find_spec


def _find_spec_hiding(name, package=None):  # type: ignore[no-untyped-def]
    return None if name.partition(".")[0] in HIDDEN else _find_spec(name, package)


importlib.util.find_spec = _find_spec_hiding

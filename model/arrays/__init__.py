"""The prediction path without torch: numpy and Pillow around an OpenVINO network.

What the CPU image serves (docs/operations.md, "Container"): the int8 network that :mod:`model.quantize`
derived, run by OpenVINO, with the fit (:mod:`.fitting`), the decoding of the grid, the scores,
the threshold and the NMS (:mod:`.postprocess`) written in numpy to the same rules as the torch
path (:mod:`model.letterbox`, :mod:`model.boxes`, :mod:`model.postprocess`). Its answers are
checked against the torch path's (tests/model/test_arrays.py, and on VOC val in docs/model.md).
Nothing here imports torch.
"""

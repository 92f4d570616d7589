"""The detector as a library. The core is flat (config, network, boxes, loss, postprocess,
letterbox, predictor, checkpoint, draw); ``hardware`` decides what the machine can do, ``data/``
reads every dataset format, ``backends/`` runs the network, ``training/`` and ``evaluation/`` make
and measure the weights, and thin command modules (``python -m model.train`` ...) drive them.

Nothing here knows about HTTP; the service in ``app/`` imports this package, never the reverse.
"""

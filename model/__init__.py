"""The detector as a library: network, box coding, loss, post-processing, VOC data,
evaluation, checkpoint format and the training/evaluation entry points.

Nothing here knows about HTTP; the service in ``app/`` imports this package, never the reverse.
"""

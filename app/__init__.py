"""The HTTP service: app factory and lifespan, routes, settings, schemas, decoding, batching.

Imports :mod:`model`; :mod:`model` never imports this package.
"""

"""The HTTP API: routes (/detect, DeepStack, probes, model card, metrics, page), schemas,
dependencies, error handlers, the access log and the request steps (:mod:`.pipeline`)."""

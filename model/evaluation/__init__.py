"""Scoring predictions: VOC AP (:mod:`.ap`), error analysis (:mod:`.analysis`), reports (:mod:`.report`)."""

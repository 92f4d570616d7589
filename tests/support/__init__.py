"""Helpers the tests share: generated data, tiny weights, real-server fixtures, attack generators."""

"""Corpora in, packed per-domain token arrays out, and the mixture sampler that reads them."""

from mixopt.data.prepare import PreparedData, prepare
from mixopt.data.sampler import MixtureSampler, validation_windows

__all__ = ["MixtureSampler", "PreparedData", "prepare", "validation_windows"]

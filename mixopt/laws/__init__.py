"""Scaling and mixing laws: fitted forms that let small proxies answer for larger models and budgets."""

from mixopt.laws.mixing import MixingLaw, fit_mixing_law
from mixopt.laws.scaling import PowerLaw, fit_power_law

__all__ = ["MixingLaw", "PowerLaw", "fit_mixing_law", "fit_power_law"]

"""Scaling and mixing laws: fitted forms that let small proxies answer for larger models and budgets.

| module | law |
|---|---|
| `fit` | the fitting core: projected grid of starts, L-BFGS on Huber, held-out selection, bootstrap |
| `mixing` | data mixing law L_i(r) = c_i + k_i·exp(t_i·r), aggregation, leave-one-out, optimum under caps |
| `scaling` | size and step laws L(x) = c + k·x^−α with α shared across series |
| `pipeline` | the nested step law → size law → mixing law pipeline |
| `dcpt` | D-CPT law L(N, D, r) and its three usages |
| `cmr` | CMR law: loss change vs tokens per ratio, critical mixture ratio, CMR vs tokens |
"""

from mixopt.laws.cmr import CMRFit, fit_cmr, fit_cmr_scaling
from mixopt.laws.dcpt import DCPTLaws, fit_dcpt, fit_dcpt_pair
from mixopt.laws.fit import FittedLaw, Form, fit_law
from mixopt.laws.mixing import MixingLaw, fit_mixing_law, loo_linear, loo_mixing_law, optimise_mixture
from mixopt.laws.pipeline import NestedPrediction, nested_predict
from mixopt.laws.scaling import PowerLaw, fit_power_law

__all__ = ["CMRFit", "DCPTLaws", "FittedLaw", "Form", "MixingLaw", "NestedPrediction", "PowerLaw", "fit_cmr",
           "fit_cmr_scaling", "fit_dcpt", "fit_dcpt_pair", "fit_law", "fit_mixing_law", "fit_power_law",
           "loo_linear", "loo_mixing_law", "nested_predict", "optimise_mixture"]

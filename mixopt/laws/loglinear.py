"""The static log-linear mixing law of the LMO framework (Aioli, arXiv 2411.05735; docs/methods.md §4a, §4d):

    L_i(p) = c_i + b_i · exp(−Σ_j A_ij p_j)

one law per validation domain i, over mixtures p on the simplex. The Aioli paper fits it to a sweep of static
runs to compare mixing methods (and to show that the LMO laws fit), and the data-mixing-law method minimises the
mean predicted loss over the simplex.

It is the data mixing law of `mixopt.laws.mixing` (c + k·exp(t·p)) written in Aioli's parameters, b = k and
A = −t, so fitting and optimising are delegated to that module: variable projection with several starts instead
of the official single `curve_fit` from (c, b, A) = (1, 1, −1), b ≥ 0 (which makes the mean loss convex in p,
so one SLSQP solve finds the optimum, with caps), rows of A reported with mean 0 (because Σ_j p_j = 1, a constant
added to a row only rescales b), and |A_ij − A_il| bounded to keep few-run fits from extrapolating wildly.
The official code minimises with Nelder–Mead on softmax(z); an exact constrained solve replaces it.

Needs at least m + 2 mixtures for m domains (m + 1 parameters per law, plus one degree of freedom).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixopt.laws.mixing import MixingLaw, fit_mixing_law, optimise_mixture


@dataclass
class LogLinearLaw:
    c: np.ndarray  # (n_out,)
    b: np.ndarray  # (n_out,), ≥ 0
    A: np.ndarray  # (n_out, m), rows with mean 0
    rmse: np.ndarray  # (n_out,) in-sample root-mean-square error of each law
    law: MixingLaw  # the same law in `mixopt.laws.mixing`'s parameters
    domains: list[str] | None = None  # the mixture's domains (columns of A)
    targets: list[str] | None = None  # the validation domains (rows)

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Predicted losses (n, n_out) for mixtures P (n, m)."""
        return self.law.predict(P)

    def objective(self, P: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Mean predicted loss over the validation domains (or the weighted sum), per mixture."""
        L = self.predict(P)
        return L.mean(axis=1) if weights is None else L @ np.asarray(weights, dtype=float)

    def optimise(self, weights: np.ndarray | None = None, caps: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float]:
        """The mixture minimising `objective` over the simplex (optionally with p_j ≤ caps_j), and its value."""
        n_out = len(self.c)
        shares = np.full(n_out, 1.0 / n_out) if weights is None else np.asarray(weights, dtype=float)
        law = MixingLaw(c=self.law.c, k=self.law.k, t=self.law.t, names=self.law.names, shares=shares)
        p = optimise_mixture(law, caps=caps)
        return p, float(self.objective(p[None, :], weights)[0])


def fit_loglinear(P: np.ndarray, L: np.ndarray, domains: list[str] | None = None,
                  targets: list[str] | None = None) -> LogLinearLaw:
    """Fit one law per column of L (n, n_out) — or a single law for a 1-D L — on mixtures P (n, m)."""
    law = fit_mixing_law(P, L, names=targets)
    P2 = np.atleast_2d(np.asarray(P, dtype=float))
    L2 = np.asarray(L, dtype=float).reshape(len(P2), -1)
    rmse = np.sqrt(((law.predict(P2) - L2) ** 2).mean(axis=0))
    return LogLinearLaw(c=law.c.copy(), b=law.k.copy(), A=-law.t, rmse=rmse, law=law, domains=domains,
                        targets=targets)

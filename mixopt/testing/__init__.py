"""Test helpers shipped with mixopt, for its own test suite and for packages that add optimizers.

`mixopt.testing.contract` holds the optimizer contract as checks: purity, determinism under a seed, mixtures on
the simplex, repetition caps after the target step, the number of proposals, and never writing to the run
table. `check_optimizer("name")` runs them all on a registered optimizer.
"""

from __future__ import annotations

from mixopt.testing.contract import (
    CHECKS,
    check_caps,
    check_determinism,
    check_no_mutation,
    check_optimizer,
    check_proposal_count,
    check_purity,
    check_simplex,
    contract_example,
)
from mixopt.testing.examples import ContractExample, static_history, synthetic_losses

__all__ = ["CHECKS", "ContractExample", "check_caps", "check_determinism", "check_no_mutation", "check_optimizer",
           "check_proposal_count", "check_purity", "check_simplex", "contract_example", "static_history",
           "synthetic_losses"]

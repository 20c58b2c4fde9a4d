"""MACE members and ensembles through mace-torch (its model classes and data handling): the
second family of the model-family contract (eelt.model.family). Importing this package
imports mace-torch, which sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the process environment
(calls that pass weights_only=True, as eelt's do, are not affected)."""

import contextlib
import io
import warnings

# mace-torch prints a notice on stdout at import (no cuequivariance: a GPU kernel library)
# and e3nn warns about a torch.load of its own constants: keep stdout for eelt's output.
with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mace.modules  # noqa: F401

from eelt.model.mace.ensemble import FAMILY, FAMILY_FILE, MaceEnsemble  # noqa: E402
from eelt.model.mace.member import MaceMember  # noqa: E402
from eelt.model.mace.statistics import MaceStatistics, data_statistics  # noqa: E402

__all__ = [
    "FAMILY",
    "FAMILY_FILE",
    "MaceEnsemble",
    "MaceMember",
    "MaceStatistics",
    "data_statistics",
]

"""Labeling: reference energies and forces (PySCF DFT, GFN-xTB, or EMT for tests) for frames.

Jobs run over a ``concurrent.futures.Executor``; each finished label is stored at once under the
content hash of (numbers, positions, cell, pbc, labeler settings), so no DFT job runs twice.
"""

from __future__ import annotations

from eelt.config import EMTLabelConfig, PySCFLabelConfig, XTBLabelConfig
from eelt.label.base import Labeler, LabelError
from eelt.label.dispatch import LABEL_HASH, LabelReport, frame_hash, label_frames
from eelt.label.emt import EMTLabeler
from eelt.label.pyscf_labeler import PySCFLabeler
from eelt.label.xtb import XTBLabeler

LABELERS: dict[str, type] = {"pyscf": PySCFLabeler, "xtb": XTBLabeler, "emt": EMTLabeler}


def make_labeler(cfg: PySCFLabelConfig | XTBLabelConfig | EMTLabelConfig) -> Labeler:
    """Build the labeler that a ``label`` config section describes (picked by its ``kind``)."""
    try:
        cls = LABELERS[cfg.kind]
    except KeyError:
        raise ValueError(
            f"label.kind: got {cfg.kind!r}; expected one of {sorted(LABELERS)}"
        ) from None
    from eelt.config import LABEL_POLICY

    fields = cfg.model_dump(exclude={"kind", *LABEL_POLICY})
    if cfg.kind == "pyscf":
        fields["timeout_s"] = cfg.timeout_s
    return cls(**fields)


__all__ = [
    "LABELERS",
    "LABEL_HASH",
    "EMTLabeler",
    "LabelError",
    "LabelReport",
    "Labeler",
    "PySCFLabeler",
    "XTBLabeler",
    "frame_hash",
    "label_frames",
    "make_labeler",
]

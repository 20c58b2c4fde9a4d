"""Which model family a trained ensemble belongs to, and loading it as that family's ensemble
(eelt.model.family.FamilyEnsemble): what MD, the examination, evaluation and export load.

A training writes ``family.json`` beside its members (``model-<k>.pt``) when the family is not
DeepPot-SE; a folder without it holds DeepPot-SE members (every run made before there were
families)."""

from __future__ import annotations

import json
import os
from importlib import import_module
from pathlib import Path

import torch

FAMILY_FILE = "family.json"
DEFAULT_FAMILY = "deeppot"
# family -> (module, ensemble class), imported when a folder of that family is loaded
ENSEMBLES = {
    "deeppot": ("eelt.model.ensemble", "Ensemble"),
    "mace": ("eelt.model.mace", "MaceEnsemble"),
}


def family_of(directory: str | os.PathLike) -> str:
    """The family of the members in ``directory`` (its family.json, else DeepPot-SE)."""
    path = Path(directory) / FAMILY_FILE
    if not path.is_file():
        return DEFAULT_FAMILY
    family = json.loads(path.read_text()).get("family", DEFAULT_FAMILY)
    if family not in ENSEMBLES:
        raise ValueError(f"{path}: unknown model family {family!r} (known: {sorted(ENSEMBLES)})")
    return family


def ensemble_class(family: str):
    module, name = ENSEMBLES[family]
    return getattr(import_module(module), name)


def load_ensemble(directory: str | os.PathLike, map_location: torch.device | str = "cpu"):
    """The ensemble a training wrote into ``directory``, as its family's ensemble class."""
    return ensemble_class(family_of(directory)).load(directory, map_location=map_location)

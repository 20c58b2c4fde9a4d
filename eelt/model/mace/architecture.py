"""A MACE architecture as plain data (numbers, strings, lists) and the mace-torch module it
builds: what a member file stores so that ``torch.load(weights_only=True)`` reads it, and how a
user's MACE model file (a whole pickled module) becomes such data.

The keys are mace-torch's ScaleShiftMACE constructor arguments; classes and functions are
stored by name, irreps as their text ("32x0e + 32x1o"), arrays as lists.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from e3nn import o3
from mace import modules
from mace.modules import blocks
from mace.tools.scripts_utils import extract_config_mace_model, remove_pt_head

# mace-torch creates its buffers, coefficients and data tensors in torch's default dtype, which
# is global to the process: everything built here is built in float64 under this lock (then
# cast), so that a float64 model holds exact coefficients and concurrent builds do not mix.
# e3nn generates code with torch.fx, whose tracer patches global state too (unpickling a whole
# model runs it): two threads doing so at once corrupt it for the rest of the process.
BUILD_LOCK = threading.RLock()

GATES = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, "abs": torch.abs, None: None}
READOUT_MLP_IRREPS = "16x0e"  # mace-torch's default hidden irreps of the last readout
INTERACTION = "RealAgnosticResidualInteractionBlock"  # mace-torch's default for MACE
UNSUPPORTED = ("cueq_config", "embedding_specs", "edge_irreps")


@contextmanager
def float64_default() -> Iterator[None]:
    """Build mace-torch objects with torch's default dtype at float64 (restored after)."""
    with BUILD_LOCK:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)


def hidden_irreps(channels: int, max_L: int) -> str:
    """mace-torch's hidden irreps: ``channels`` of each order 0..max_L with parity (-1)^L."""
    return " + ".join(f"{channels}x{L}{'e' if L % 2 == 0 else 'o'}" for L in range(max_L + 1))


def new_architecture(
    section: Any,
    atomic_numbers: list[int],
    atomic_energies_eV: list[float],
    avg_num_neighbors: float,
    scale_eV: float,
    shift_eV: float,
) -> dict:
    """The architecture of a new ScaleShiftMACE from a ``train.model`` section of kind mace
    (eelt.config.MaceModelConfig); element order ``atomic_numbers`` with isolated-atom
    energies ``atomic_energies_eV``, mean neighbor count, and the interaction energy's scale
    and shift (eV per atom)."""
    return {
        "r_max": float(section.r_max_A),
        "num_bessel": int(section.num_radial_basis),
        "num_polynomial_cutoff": int(section.num_cutoff_basis),
        "max_ell": int(section.max_ell),
        "interaction_cls": INTERACTION,
        "interaction_cls_first": INTERACTION,
        "num_interactions": int(section.num_interactions),
        "num_elements": len(atomic_numbers),
        "hidden_irreps": str(o3.Irreps(hidden_irreps(section.channels, section.max_L))),
        "MLP_irreps": READOUT_MLP_IRREPS,
        "gate": "silu",
        "atomic_energies": [float(e) for e in atomic_energies_eV],
        "avg_num_neighbors": float(avg_num_neighbors),
        "atomic_numbers": [int(z) for z in atomic_numbers],
        "correlation": int(section.correlation),
        "radial_MLP": [int(w) for w in section.radial_MLP],
        "atomic_inter_scale": float(scale_eV),
        "atomic_inter_shift": float(shift_eV),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def architecture_of(module: torch.nn.Module) -> dict:
    """The architecture of a mace-torch ScaleShiftMACE (mace-torch's own reading of it,
    extract_config_mace_model) as plain data; ValueError for a model eelt cannot rebuild."""
    config = extract_config_mace_model(module)
    if "error" in config:
        raise ValueError(config["error"])
    for key in UNSUPPORTED:
        if config.get(key) is not None:
            raise ValueError(f"MACE models with {key} are not supported")
    if len(config["heads"]) != 1:
        raise ValueError(f"a MACE model with heads {config['heads']} (one expected)")
    names = {id(f): name for name, f in GATES.items()}
    if id(config["gate"]) not in names:
        raise ValueError(f"MACE model with an unknown gate {config['gate']!r}")
    arch = {key: _plain(value) for key, value in config.items() if key not in UNSUPPORTED}
    arch["gate"] = names[id(config["gate"])]
    arch["interaction_cls"] = config["interaction_cls"].__name__
    arch["interaction_cls_first"] = config["interaction_cls_first"].__name__
    arch["readout_cls"] = config["readout_cls"].__name__
    arch["hidden_irreps"] = str(config["hidden_irreps"])
    arch["MLP_irreps"] = str(config["MLP_irreps"])
    arch["distance_transform"] = config["distance_transform"] or "None"
    arch["avg_num_neighbors"] = float(arch["avg_num_neighbors"])
    return arch


def single_head(module: torch.nn.Module) -> torch.nn.Module:
    """A multi-head MACE model reduced to its first fine-tuning head (mace-torch's
    remove_pt_head); a single-head model as it is."""
    heads = getattr(module, "heads", None) or ["Default"]
    if len(heads) == 1:
        return module
    with float64_default():
        return remove_pt_head(module)


def build_module(arch: Mapping[str, Any], seed: int = 0) -> modules.ScaleShiftMACE:
    """The ScaleShiftMACE of an architecture in float64, its weights drawn from ``seed``
    (torch's global generator is left as it was)."""
    kwargs = dict(arch)
    kwargs["interaction_cls"] = modules.interaction_classes[arch["interaction_cls"]]
    kwargs["interaction_cls_first"] = modules.interaction_classes[arch["interaction_cls_first"]]
    if "readout_cls" in arch:
        kwargs["readout_cls"] = getattr(blocks, arch["readout_cls"])
    kwargs["gate"] = GATES[arch["gate"]]
    kwargs["hidden_irreps"] = o3.Irreps(arch["hidden_irreps"])
    kwargs["MLP_irreps"] = o3.Irreps(arch["MLP_irreps"])
    kwargs["atomic_energies"] = np.asarray(arch["atomic_energies"], dtype=np.float64)
    kwargs["atomic_inter_scale"] = np.asarray(arch["atomic_inter_scale"], dtype=np.float64)
    kwargs["atomic_inter_shift"] = np.asarray(arch["atomic_inter_shift"], dtype=np.float64)
    with float64_default(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # e3nn scripts its blocks with TorchScript, which warns on each; harmless here
        warnings.filterwarnings("ignore", category=UserWarning, module="ast")
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
        torch.manual_seed(int(seed))
        return modules.ScaleShiftMACE(**kwargs)

"""The DeepPot-SE (se_e2_a) descriptor, evaluated for K stacked members at once.

Smooth switch s(r) = sw(r) / r, sw going from 1 at rcut_smth to 0 at rcut with zero first
and second derivatives at both ends; environment row R~ = (s, s x/r, s y/r, s z/r) scaled by
per-center-element RMS values (no mean subtracted, so a pair at rcut contributes exactly 0);
T_i = (1/n_norm) sum_j G(s_ij)^T R~_ij, D_i = T_i T_i<^T.
"""

from __future__ import annotations

import torch

from eelt.model.networks import run_blocks
from eelt.model.packing import Packing


def smooth_switch(r_A: torch.Tensor, rcut_smth_A: float, rcut_A: float) -> torch.Tensor:
    """1 below rcut_smth_A, 0 at and beyond rcut_A, quintic (C2) in between."""
    u = ((r_A - rcut_smth_A) / (rcut_A - rcut_smth_A)).clamp(0.0, 1.0)
    return u**3 * (u * (15.0 - 6.0 * u) - 10.0) + 1.0


def environment(
    r: torch.Tensor, rcut_smth_A: float, rcut_A: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair vectors (..., 3) Angstrom -> s (...) 1/Angstrom and R~ (..., 4)."""
    dist = torch.linalg.vector_norm(r, dim=-1)
    s = smooth_switch(dist, rcut_smth_A, rcut_A) / dist
    env = torch.cat([s.unsqueeze(-1), (s / dist).unsqueeze(-1) * r], dim=-1)
    return s, env


def se_e2_a(
    r: torch.Tensor,
    center_types: torch.Tensor,
    embedding: list[tuple[list[torch.Tensor], list[torch.Tensor]]],
    pairs: Packing,
    stats: dict[str, torch.Tensor],
    rcut_smth_A: float,
    rcut_A: float,
    axis_neuron: int,
) -> torch.Tensor:
    """Dense pair vectors r (K, N * S, 3) -> descriptors (K, N, D), D = width * axis_neuron.

    Rows of r: each center's S slots (see neighbors.Batch), centers sorted by element,
    ``center_types`` (N,) their elements; padding slots must lie beyond rcut_A.
    ``embedding[t * n_types + u]`` holds the (weights, biases) of the (t, u) embedding net
    for the K members, run on the slots as ``pairs`` packs them (packing.layout_packings);
    ``stats`` holds (K, n_types) tensors s_mean, s_std, s_rms, a_std and n_norm.
    TorchScript-able: the exported model runs this same function.
    """
    n_members, n_atoms = r.shape[0], center_types.shape[0]
    n_slots = r.shape[1] // max(n_atoms, 1)
    width = embedding[0][0][-1].shape[-1]
    s, env = environment(r, rcut_smth_A, rcut_A)
    mean = stats["s_mean"][:, center_types].unsqueeze(-1)
    std = stats["s_std"][:, center_types].unsqueeze(-1)
    x = (s.view(n_members, n_atoms, n_slots) - mean) / std
    g = run_blocks(embedding, False, pairs, x.view(n_members, n_atoms * n_slots, 1))
    rows = env.view(n_members * n_atoms, n_slots, 4).transpose(1, 2)
    t = torch.bmm(rows, g.view(n_members * n_atoms, n_slots, width))
    # R~ rows scaled by their RMS (no mean removed), so entries are O(1): a std would blow the
    # radial column up (s varies little around its mean) and saturate the fitting net
    s_rms = stats["s_rms"][:, center_types].unsqueeze(-1)
    a_std = stats["a_std"][:, center_types].unsqueeze(-1).expand(-1, -1, 3)
    scale = torch.cat([s_rms, a_std], 2) * stats["n_norm"][:, center_types].unsqueeze(-1)
    t = (t.view(n_members, n_atoms, 4, width) / scale.unsqueeze(-1)).view(-1, 4, width)
    d = torch.bmm(t.transpose(1, 2), t[:, :, :axis_neuron])
    return d.view(n_members, n_atoms, width * axis_neuron)

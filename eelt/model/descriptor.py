"""The DeepPot-SE (se_e2_a) descriptor, evaluated for K stacked members at once.

Smooth switch s(r) = sw(r) / r, sw going from 1 at rcut_smth to 0 at rcut with zero first
and second derivatives at both ends; environment row R~ = (s, s x/r, s y/r, s z/r) scaled by
per-center-element RMS values (no mean subtracted, so a pair at rcut contributes exactly 0);
T_i = (1/n_norm) sum_j G(s_ij)^T R~_ij, D_i = T_i T_i<^T.
"""

from __future__ import annotations

import torch
from torch import nn

from eelt.model.neighbors import Batch


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
    batch: Batch,
    embedding: nn.ModuleList,
    members: slice,
    stats: dict[str, torch.Tensor],
    rcut_smth_A: float,
    rcut_A: float,
    axis_neuron: int,
) -> list[tuple[int, torch.Tensor]]:
    """Dense pair vectors r (K, N * sum(sel), 3) -> [(element t, descriptors (K, n_t, D))].

    Centers come in ``batch.center_order``; padding slots must lie beyond rcut_A. The
    embedding net of (t, u) is ``embedding[t * n_types + u]``, evaluated for ``members``;
    ``stats`` holds (K, n_types) tensors s_mean, s_std, s_rms, a_std and n_norm.
    """
    n_members, n_atoms, n_slots = r.shape[0], batch.n_atoms, sum(batch.sel)
    n_types = stats["s_mean"].shape[1]
    width = embedding[0].weights[-1].shape[-1]
    s, env = environment(r, rcut_smth_A, rcut_A)
    s = s.view(n_members, n_atoms, n_slots)
    env = env.view(n_members, n_atoms, n_slots, 4)
    out = []
    start = 0
    for center_type, n_centers in enumerate(batch.type_counts):
        if n_centers == 0:
            continue
        stop = start + n_centers
        mean = stats["s_mean"][:, center_type, None, None]
        s_std = stats["s_std"][:, center_type, None, None]
        t = None
        first = 0
        for neighbor_type, n_sel in enumerate(batch.sel):
            if n_sel == 0:
                continue
            last = first + n_sel
            x = ((s[:, start:stop, first:last] - mean) / s_std).reshape(n_members, -1, 1)
            g = embedding[center_type * n_types + neighbor_type](x, members)
            g = g.view(n_members * n_centers, n_sel, width)
            rows = env[:, start:stop, first:last].reshape(n_members * n_centers, n_sel, 4)
            part = torch.bmm(rows.transpose(1, 2), g)
            t = part if t is None else t + part
            first = last
        if t is None:  # no neighbors anywhere in the batch
            t = r.new_zeros(n_members * n_centers, 4, width)
        a_std = stats["a_std"][:, center_type, None]
        # R~ rows scaled by their RMS (no mean removed), so entries are O(1): a std would blow
        # the radial column up (s varies little around its mean) and saturate the fitting net
        s_rms = stats["s_rms"][:, center_type, None]
        scale = torch.cat([s_rms, a_std.expand(-1, 3)], dim=1)  # (K, 4)
        scale = scale * stats["n_norm"][:, center_type, None]
        t = t.view(n_members, n_centers, 4, width) / scale[:, None, :, None]
        t = t.view(n_members * n_centers, 4, width)
        d = torch.bmm(t.transpose(1, 2), t[:, :, :axis_neuron])
        out.append((center_type, d.view(n_members, n_centers, width * axis_neuron)))
        start = stop
    return out

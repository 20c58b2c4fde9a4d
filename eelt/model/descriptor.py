"""The DeepPot-SE (se_e2_a) descriptor, evaluated for K stacked members at once.

Smooth switch s(r) = sw(r) / r, sw going from 1 at rcut_smth to 0 at rcut with zero first
and second derivatives at both ends; environment row R~ = (s, s x/r, s y/r, s z/r) scaled by
per-center-element RMS values (no mean subtracted, so a pair at rcut contributes exactly 0);
T_i = (1/n_norm) sum_j G(s_ij)^T R~_ij, D_i = T_i T_i<^T.
"""

from __future__ import annotations

import torch

from eelt.model.networks import residual_mlp


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
    type_counts: list[int],
    sel: list[int],
    embedding: list[tuple[list[torch.Tensor], list[torch.Tensor]]],
    stats: dict[str, torch.Tensor],
    rcut_smth_A: float,
    rcut_A: float,
    axis_neuron: int,
) -> list[tuple[int, torch.Tensor]]:
    """Dense pair vectors r (K, N * sum(sel), 3) -> [(element t, descriptors (K, n_t, D))].

    Centers come sorted by type, ``type_counts[t]`` of type t, each with ``sel[u]`` slots
    for neighbors of type u (see neighbors.Batch); padding slots must lie beyond rcut_A.
    ``embedding[t * n_types + u]`` holds the (weights, biases) of the (t, u) embedding net
    for the K members; ``stats`` holds (K, n_types) tensors s_mean, s_std, s_rms, a_std and
    n_norm. TorchScript-able: the exported model runs this same function.
    """
    n_members, n_atoms, n_slots = r.shape[0], sum(type_counts), sum(sel)
    n_types = stats["s_mean"].shape[1]
    width = embedding[0][0][-1].shape[-1]
    s, env = environment(r, rcut_smth_A, rcut_A)
    s = s.view(n_members, n_atoms, n_slots)
    env = env.view(n_members, n_atoms, n_slots, 4)
    out: list[tuple[int, torch.Tensor]] = []
    start = 0
    for center_type, n_centers in enumerate(type_counts):
        if n_centers == 0:
            continue
        stop = start + n_centers
        mean = stats["s_mean"][:, center_type, None, None]
        s_std = stats["s_std"][:, center_type, None, None]
        t: torch.Tensor | None = None
        first = 0
        for neighbor_type, n_sel in enumerate(sel):
            if n_sel == 0:
                continue
            last = first + n_sel
            x = ((s[:, start:stop, first:last] - mean) / s_std).reshape(n_members, -1, 1)
            weights, biases = embedding[center_type * n_types + neighbor_type]
            g = residual_mlp(x, weights, biases, False).view(n_members * n_centers, n_sel, width)
            rows = env[:, start:stop, first:last].reshape(n_members * n_centers, n_sel, 4)
            part = torch.bmm(rows.transpose(1, 2), g)
            if t is None:
                t = part
            else:
                t = t + part
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

"""Member-stacked MLPs: K networks of one shape evaluated together with batched matmuls.

Layers use tanh with DeePMD's residual rule: y = x + tanh(Wx + b) when the width stays,
y = cat(x, x) + tanh(Wx + b) when it doubles, y = tanh(Wx + b) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from eelt.model.packing import Packing


class StackedMLP(nn.Module):
    """K MLPs of widths ``widths`` (input first); ``linear_out`` adds a final linear layer to 1."""

    def __init__(
        self,
        widths: Sequence[int],
        n_members: int,
        linear_out: bool,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        dims = list(widths) + ([1] if linear_out else [])
        self.linear_out = linear_out
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(dims[:-1], dims[1:], strict=True):
            weight = torch.empty(n_members, n_in, n_out, dtype=torch.float64)
            bias = torch.zeros(n_members, 1, n_out, dtype=torch.float64)
            if generator is not None:
                weight.normal_(0.0, (n_in + n_out) ** -0.5, generator=generator)
                if n_out != 1:
                    bias.normal_(0.0, 1.0, generator=generator)
            self.weights.append(nn.Parameter(weight.to(dtype)))
            self.biases.append(nn.Parameter(bias.to(dtype)))

    def layers(self, start: int, stop: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Weights (k, n_in, n_out) and biases (k, 1, n_out) of members start..stop-1, for
        ``residual_mlp``; TorchScript-able."""
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        for weight in self.weights:
            weights.append(member_rows(weight, start, stop))
        for bias in self.biases:
            biases.append(member_rows(bias, start, stop))
        return weights, biases


def member_rows(stacked: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Members start..stop-1 of a tensor with a leading member axis (itself when all)."""
    if start == 0 and stop == stacked.shape[0]:
        return stacked
    return stacked[start:stop]


def residual_mlp(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], linear_out: bool
) -> torch.Tensor:
    """Layers (k, n_in, n_out) and biases (k, 1, n_out) applied to (k, M, n_in); TorchScript-able."""
    n_layers = len(weights)
    for layer in range(n_layers):
        weight, bias = weights[layer], biases[layer]
        y = torch.baddbmm(bias, x, weight)
        if linear_out and layer == n_layers - 1:
            return y
        y = torch.tanh(y)
        n_in, n_out = weight.shape[1], weight.shape[2]
        if n_out == n_in:
            x = x + y
        elif n_out == 2 * n_in:  # cat(x, x) + y without materialising cat(x, x)
            x = (y.unflatten(-1, [2, n_in]) + x.unsqueeze(-2)).flatten(-2)
        else:
            x = y
    return x


def run_blocks(
    nets: list[tuple[list[torch.Tensor], list[torch.Tensor]]],
    linear_out: bool,
    packing: Packing,
    x: torch.Tensor,
) -> torch.Tensor:
    """Rows x (K, R, n_in) -> (K, R, n_out), each block of rows through its own net of ``nets``
    (each net's layers for the K members), the blocks grouped as ``packing`` says (a group's
    nets stacked into one batched MLP); TorchScript-able."""
    n_members = x.shape[0]
    gather = packing.gather
    if gather is not None:
        x = x.index_select(1, gather)
    outs: list[torch.Tensor] = []
    start = 0
    for g in range(len(packing.nets)):  # TorchScript has no zip(strict=)
        group, rows = packing.nets[g], packing.rows[g]
        stop = start + len(group) * rows
        part = x if len(packing.nets) == 1 else x[:, start:stop]
        if len(group) == 1:
            weights, biases = nets[group[0]]
            y = residual_mlp(part, weights, biases, linear_out)
        else:
            group_weights: list[torch.Tensor] = []
            group_biases: list[torch.Tensor] = []
            for layer in range(len(nets[group[0]][0])):
                w = torch.stack([nets[n][0][layer] for n in group], 1)
                b = torch.stack([nets[n][1][layer] for n in group], 1)
                group_weights.append(w.flatten(0, 1))
                group_biases.append(b.flatten(0, 1))
            part = part.reshape(n_members * len(group), rows, part.shape[-1])
            y = residual_mlp(part, group_weights, group_biases, linear_out)
            y = y.view(n_members, len(group) * rows, y.shape[-1])
        outs.append(y)
        start = stop
    y = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    scatter = packing.scatter
    if scatter is not None:
        y = y.index_select(1, scatter)
    return y

"""How a MemberStack's per element-pair embedding nets and per element fitting nets run on a
dense layout: blocks of rows, each through its own net, in groups that each run as one
batched MLP.

In the dense layout (neighbors.Batch, member_batch.MemberBatch) centers come sorted by
element and each center has ``sum(sel)`` neighbor slots, ``sel[u]`` for element u; the rows
of the embedding nets are the slots (block (t, u): the slots of element u around the centers
of element t, net t * T + u), those of the fitting nets the centers (block t, net t).

The per-operation overhead, not the arithmetic, sets the time of a training step of small
nets, so blocks of similar size run as one batched MLP ("group"), each padded to the largest
of its group; the padding of a group is bounded by what its arithmetic costs
(PACK_PAD_MACS), so large nets, whose time is arithmetic, do not pay for it.
TorchScript-able: the exported model packs with this same code.
"""

from typing import NamedTuple

import torch

# Budgets in multiply-adds per layer of the nets' forward pass (float32; float64 counts
# double), over all members: what padding costs against what it saves, the overhead of one
# operation per layer of each group avoided. A block joins a group while the group's padding
# stays within PACK_PAD_MACS; all blocks form one group when the padded rows cost at most
# PACK_SMALL_MACS, and on an accelerator, where a kernel launch costs more than small
# arithmetic. Measured CPU ms per training step, 4 frames of ethanol per member, the water
# example's nets, float32, one thread: one member 7.6 in groups (here: one, padded 4x), 10.4
# block by block, 11.8 with each block's rows sliced out; four members 12.4 in groups, 16.1
# as one group, 16.8 block by block, 19.2 sliced. Large nets pad little: an ensemble of 4
# default nets (se_e2_a 25-50-100, fitting 240-240-240) on ethanol in float64 took 33 ms per
# MD step with budgets counted in the widest layer instead (padded rows 2.4x the real ones),
# 24 block by block, 21 with these.
PACK_PAD_MACS = 2**18
PACK_SMALL_MACS = 2**19


def row_cost(widths: list[int], dtype: torch.dtype) -> int:
    """Multiply-adds per row and layer of an MLP of ``widths`` (input first), float32-equivalent."""
    macs = 0
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        macs += n_in * n_out
    return max(1, macs // (len(widths) - 1)) * (2 if dtype == torch.float64 else 1)


class Packing(NamedTuple):
    """Groups of blocks: group g runs nets ``nets[g]``, each on ``rows[g]`` rows (its block
    padded by repeating one of its rows). ``gather`` (P,) lays the rows out group after group;
    ``scatter`` (rows,) says where each row's result lies in the P. None: the identity."""

    nets: list[list[int]]
    rows: list[int]
    gather: torch.Tensor | None
    scatter: torch.Tensor | None


def block_groups(
    sizes: list[int], pad_rows: int, small: bool, packed: bool | None
) -> list[list[int]]:
    """Blocks (indices into ``sizes``) in groups: largest first, a group taking the next block
    while its padding stays within ``pad_rows`` rows; one group when ``small``. ``packed``
    True: one group; False: block by block; None: as said."""
    order: list[int] = torch.argsort(
        torch.tensor(sizes, dtype=torch.long), descending=True, stable=True
    ).tolist()
    if (packed is not None and packed) or (packed is None and small):
        return [order]
    if packed is not None:
        return [[b] for b in range(len(sizes))]
    groups: list[list[int]] = []
    for b in order:
        if len(groups) > 0:
            group = groups[-1]
            held = 0
            for c in group:
                held += sizes[c]
            if sizes[group[0]] * (len(group) + 1) - held - sizes[b] <= pad_rows:
                group.append(b)
                continue
        groups.append([b])
    return groups


def pack_blocks(
    nets: list[int],
    rows: list[torch.Tensor],
    n_rows: int,
    pad_rows: int,
    small: bool,
    packed: bool | None,
    device: torch.device,
) -> Packing:
    """The Packing of blocks: net ``nets[b]`` on rows ``rows[b]`` (long, CPU; together all of
    0..n_rows-1), its index tensors on ``device``."""
    sizes = [int(r.shape[0]) for r in rows]
    group_nets: list[list[int]] = []
    group_rows: list[int] = []
    gather: list[torch.Tensor] = []
    scatter = torch.zeros(n_rows, dtype=torch.long)
    start = 0
    for group in block_groups(sizes, pad_rows, small, packed):
        most = 0
        for b in group:
            most = max(most, sizes[b])
        for b in group:
            r = rows[b]
            if sizes[b] > 0:
                gather.append(torch.cat([r, r[:1].expand(most - sizes[b])]))
                scatter[r] = start + torch.arange(sizes[b])
            else:
                gather.append(torch.zeros(most, dtype=torch.long))
            start += most
        group_nets.append([nets[b] for b in group])
        group_rows.append(most)
    order = torch.cat(gather)
    if order.shape[0] == n_rows and bool((order == torch.arange(n_rows)).all()):
        return Packing(group_nets, group_rows, None, None)
    return Packing(group_nets, group_rows, order.to(device), scatter.to(device))


def layout_packings(
    type_counts: list[int],
    sel: list[int],
    n_types: int,
    n_members: int,
    costs: tuple[int, int],
    device: torch.device,
    packed: bool | None,
) -> tuple[Packing, Packing]:
    """How the embedding nets (rows: the N * sum(sel) slots of one member) and the fitting nets
    (rows: its N centers) run on a layout with ``type_counts`` centers and ``sel`` slots per
    element, for ``n_members`` members of a model of ``n_types`` elements; ``costs``: the
    row_cost of each. ``packed``: see :func:`block_groups`."""
    n_slots = 0
    for n_sel in sel:
        n_slots += n_sel
    n_atoms = 0
    for n_centers in type_counts:
        n_atoms += n_centers
    pair_nets: list[int] = []
    pair_rows: list[torch.Tensor] = []
    center_nets: list[int] = []
    center_rows: list[torch.Tensor] = []
    first_center = 0
    for t, n_centers in enumerate(type_counts):
        if n_centers == 0:
            continue
        centers = first_center + torch.arange(n_centers)
        first_center += n_centers
        center_nets.append(t)
        center_rows.append(centers)
        first_slot = 0
        for u, n_sel in enumerate(sel):
            if n_sel > 0:
                slots = first_slot + torch.arange(n_sel)
                pair_nets.append(t * n_types + u)
                pair_rows.append((centers.unsqueeze(1) * n_slots + slots.unsqueeze(0)).flatten())
            first_slot += n_sel
    if len(pair_nets) == 0:  # no neighbors anywhere: one empty block keeps one code path
        pair_nets.append(0)
        pair_rows.append(torch.zeros(0, dtype=torch.long))
    return (
        _packing_of(pair_nets, pair_rows, n_atoms * n_slots, costs[0], n_members, device, packed),
        _packing_of(center_nets, center_rows, n_atoms, costs[1], n_members, device, packed),
    )


def _packing_of(
    nets: list[int],
    rows: list[torch.Tensor],
    n_rows: int,
    cost: int,
    n_members: int,
    device: torch.device,
    packed: bool | None,
    small_macs: int = PACK_SMALL_MACS,
    pad_macs: int = PACK_PAD_MACS,
) -> Packing:
    """pack_blocks within the budgets PACK_SMALL_MACS and PACK_PAD_MACS (arguments for
    TorchScript) for nets of row_cost ``cost``, run for ``n_members`` members."""
    most = 0
    for r in rows:
        most = max(most, int(r.shape[0]))
    small = device.type != "cpu" or n_members * most * len(rows) * cost <= small_macs
    pad_rows = pad_macs // (n_members * cost)
    return pack_blocks(nets, rows, n_rows, pad_rows, small, packed, device)

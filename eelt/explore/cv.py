"""Collective variables: scalar torch functions of the positions, so biases get forces by autograd.

Every CV takes ``positions`` (N, 3) Angstrom and ``cell`` (3, 3) Angstrom as float64 tensors and
returns a scalar tensor. Positions are used as they are, without minimum image: ASE's molecular
dynamics keeps them unwrapped, so a distance is the one between the atoms as stored. A CV with
``periodic = True`` wraps with period :data:`PERIOD` (2 pi); distances and angles do not wrap.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

PERIOD = 2.0 * math.pi  # period of the periodic CVs (radians)

TorchFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CV(Protocol):
    """A collective variable: ``cv(positions, cell) -> scalar tensor`` with a name."""

    name: str
    periodic: bool

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor: ...


def _join(indices: Sequence[int]) -> str:
    return "_".join(str(i) for i in indices)


def _group_label(indices: Sequence[int]) -> str:
    """The indices joined by "_", or for more than 6 "first-last_n" (a name, not a spec)."""
    if len(indices) <= 6:
        return _join(indices)
    return f"{indices[0]}-{indices[-1]}_{len(indices)}"


class Distance:
    """Distance between atoms i and j (Angstrom)."""

    periodic = False

    def __init__(self, i: int, j: int, name: str | None = None) -> None:
        self.i, self.j = int(i), int(j)
        self.name = name or f"distance_{_join((i, j))}"

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(positions[self.j] - positions[self.i])


class Angle:
    """Angle i-j-k at vertex j (radians in [0, pi]); atan2 form, accurate near 0 and pi."""

    periodic = False

    def __init__(self, i: int, j: int, k: int, name: str | None = None) -> None:
        self.i, self.j, self.k = int(i), int(j), int(k)
        self.name = name or f"angle_{_join((i, j, k))}"

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        u = positions[self.i] - positions[self.j]
        v = positions[self.k] - positions[self.j]
        return torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(u, v)), torch.dot(u, v))


class Dihedral:
    """Dihedral i-j-k-l (radians in (-pi, pi], IUPAC sign, ASE's angle modulo 2 pi); periodic."""

    periodic = True

    def __init__(self, i: int, j: int, k: int, l: int, name: str | None = None) -> None:  # noqa: E741
        self.atoms = (int(i), int(j), int(k), int(l))
        self.name = name or f"dihedral_{_join(self.atoms)}"

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        i, j, k, l = self.atoms  # noqa: E741
        b1 = positions[j] - positions[i]
        b2 = positions[k] - positions[j]
        b3 = positions[l] - positions[k]
        n1 = torch.linalg.cross(b1, b2)
        n2 = torch.linalg.cross(b2, b3)
        y = torch.linalg.vector_norm(b2) * torch.dot(b1, n2)
        x = torch.dot(n1, n2)
        phi = torch.atan2(y, x)
        return torch.where(phi <= -math.pi, phi + PERIOD, phi)  # atan2(-0.0, x<0) = -pi


class Coordination:
    """PLUMED's COORDINATION: sum over pairs of s(r) = (1 - (r/r0)^nn) / (1 - (r/r0)^mm).

    Pairs are group_a x group_b without an atom paired with itself (a pair whose atoms are in
    both groups counts twice, as in PLUMED); without ``group_b``, each pair within group_a
    once. s is evaluated as sum_{k<nn} x^k / sum_{k<mm} x^k, the same ratio with the factor
    (1 - x) cancelled, so r = r0 gives nn/mm with a smooth gradient.
    """

    periodic = False

    def __init__(
        self,
        group_a: Sequence[int],
        group_b: Sequence[int] | None,
        r0_A: float,
        nn: int = 6,
        mm: int = 12,
        name: str | None = None,
    ) -> None:
        if int(nn) != nn or int(mm) != mm or nn < 1 or mm < 1:
            raise ValueError(f"coordination nn and mm must be positive integers, got {nn}, {mm}")
        if r0_A <= 0:
            raise ValueError(f"coordination r0_A must be positive, got {r0_A}")
        a = [int(i) for i in group_a]
        b = None if group_b is None else [int(i) for i in group_b]
        ta = torch.tensor(a, dtype=torch.long)
        if b is None:
            pairs = torch.combinations(ta, 2) if len(a) > 1 else torch.zeros(0, 2, dtype=torch.long)
        else:
            pairs = torch.cartesian_prod(ta, torch.tensor(b, dtype=torch.long)).reshape(-1, 2)
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if len(pairs) == 0:
            raise ValueError("coordination needs at least one pair of distinct atoms")
        self.group_a, self.group_b = a, b
        self.r0_A, self.nn, self.mm = float(r0_A), int(nn), int(mm)
        self._first, self._second = pairs[:, 0], pairs[:, 1]
        label = _group_label(a) if b is None else f"{_group_label(a)}__{_group_label(b)}"
        self.name = name or f"coordination_{label}"

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(positions[self._second] - positions[self._first], dim=-1)
        x = (r / self.r0_A).unsqueeze(-1)
        numerator = (x ** torch.arange(self.nn, dtype=x.dtype)).sum(-1)
        denominator = (x ** torch.arange(self.mm, dtype=x.dtype)).sum(-1)
        return (numerator / denominator).sum()


class TorchCV:
    """Any torch function ``function(positions, cell) -> scalar tensor`` as a CV."""

    def __init__(self, function: TorchFunction, name: str, periodic: bool = False) -> None:
        self.function = function
        self.name = name
        self.periodic = bool(periodic)

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return self.function(positions, cell)


def import_function(path: str) -> TorchFunction:
    """The callable at ``"package.module:function_name"``; ValueError saying what failed."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"torch CV function must be 'package.module:function_name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"torch CV function {path!r}: cannot import {module_name!r} ({error})"
        ) from error
    function = module
    for part in attribute.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise ValueError(f"torch CV function {path!r}: {module_name!r} has no {attribute!r}")
    if not callable(function):
        raise ValueError(f"torch CV function {path!r} is not callable")
    return function


def _atoms(spec: dict, count: int) -> list[int]:
    atoms = spec.get("atoms")
    if atoms is None or len(atoms) != count:
        raise ValueError(f"a {spec['kind']} CV needs 'atoms' with {count} indices, got {atoms!r}")
    return [int(i) for i in atoms]


def _distance(spec: dict) -> CV:
    return Distance(*_atoms(spec, 2), name=spec.get("name"))


def _angle(spec: dict) -> CV:
    return Angle(*_atoms(spec, 3), name=spec.get("name"))


def _dihedral(spec: dict) -> CV:
    return Dihedral(*_atoms(spec, 4), name=spec.get("name"))


def _coordination(spec: dict) -> CV:
    if "group_a" not in spec or "r0_A" not in spec:
        raise ValueError(f"a coordination CV needs 'group_a' and 'r0_A', got {sorted(spec)}")
    return Coordination(
        spec["group_a"],
        spec.get("group_b"),
        spec["r0_A"],
        nn=spec.get("nn", 6),
        mm=spec.get("mm", 12),
        name=spec.get("name"),
    )


def _torch(spec: dict) -> CV:
    if "function" not in spec:
        raise ValueError("a torch CV needs 'function': 'package.module:function_name'")
    path = str(spec["function"])
    name = spec.get("name") or path.rpartition(":")[2].rpartition(".")[2]
    return TorchCV(import_function(path), name, periodic=bool(spec.get("periodic", False)))


_BUILDERS: dict[str, Callable[[dict], CV]] = {
    "distance": _distance,
    "angle": _angle,
    "dihedral": _dihedral,
    "coordination": _coordination,
    "torch": _torch,
}
# keys a spec may hold; those of another kind are ignored (a config model carries all of them)
_SPEC_KEYS = {
    "kind",
    "name",
    "atoms",
    "group_a",
    "group_b",
    "r0_A",
    "nn",
    "mm",
    "function",
    "periodic",
}


def cv_from_spec(spec: dict) -> CV:
    """A CV from a dict such as ``{"kind": "dihedral", "atoms": [1, 0, 2, 3]}`` (optional "name").

    Kinds: distance, angle, dihedral (``atoms``), coordination (``group_a``, optional
    ``group_b``, ``r0_A``, ``nn``, ``mm``), torch (``function``: "package.module:function_name",
    optional ``periodic``). Keys meant for another kind are ignored, unknown keys refused.
    """
    kind = spec.get("kind")
    if kind not in _BUILDERS:
        raise ValueError(f"unknown CV kind {kind!r}; known: {', '.join(_BUILDERS)}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown CV spec keys: {', '.join(sorted(unknown))}")
    return _BUILDERS[kind](spec)

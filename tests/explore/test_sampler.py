"""The cheap thermal sampler: conformer starts, Langevin MD at a temperature, diverse choice."""

import numpy as np
import pytest
from ase.build import molecule
from ase.cluster import Octahedron

from eelt.explore import sampler


def _butane():
    atoms = molecule("trans-butane")
    carbons = [i for i, z in enumerate(atoms.numbers) if z == 6]
    # order the carbons along the chain: the two ends have one carbon neighbour
    d = atoms.get_all_distances()[np.ix_(carbons, carbons)]
    n_c = (d < 1.7).sum(axis=1) - 1
    end = carbons[int(np.argmin(n_c))]
    chain = [end]
    while len(chain) < 4:
        last = chain[-1]
        nxt = [c for c in carbons if c not in chain and atoms.get_distance(last, c) < 1.7]
        chain.append(nxt[0])
    return atoms, chain


def _bond_lengths(atoms, reference):
    graph = sampler._bond_graph(reference)
    return np.array([atoms.get_distance(a, b) for a in range(len(atoms)) for b in graph[a]])


def test_butane_rotation_keeps_bonds_and_turns_the_dihedral_by_the_angle():
    atoms, (c1, c2, c3, c4) = _butane()
    bonds = sampler.rotatable_bonds(atoms)
    central = [b for b in bonds if {b[0], b[1]} == {c2, c3}]
    assert len(central) == 1, bonds
    assert len(bonds) == 1  # C-H bonds and methyl rotors are left out
    i, j, moving = central[0]
    before = atoms.get_dihedral(c1, c2, c3, c4)
    for angle in (120.0, 240.0):
        new = sampler.rotate_about_bond(atoms, i, j, moving, angle)
        np.testing.assert_allclose(
            _bond_lengths(new, atoms), _bond_lengths(atoms, atoms), atol=1e-9
        )
        turned = (new.get_dihedral(c1, c2, c3, c4) - before) % 360.0
        assert min(abs(turned - angle), abs(turned + angle - 360.0)) < 1e-6
    starts = sampler.conformer_starts(atoms)
    assert len(starts) == 2  # gauche+ and gauche- of butane do not clash


def test_a_start_with_atoms_on_top_of_each_other_clashes():
    atoms, (c1, c2, c3, c4) = _butane()
    assert not sampler.clashes(atoms, atoms)
    squeezed = atoms.copy()
    # the end carbon pushed to 1.0 A of the other end's carbon: not bonded there, a clash
    squeezed.positions[c4] = squeezed.positions[c1] + [1.0, 0.0, 0.0]
    assert sampler.clashes(squeezed, atoms)


def test_ring_and_multiple_bonds_are_not_rotatable():
    assert sampler.rotatable_bonds(molecule("C6H6")) == []
    ethanol = sampler.rotatable_bonds(molecule("CH3CH2OH"))
    assert (
        len(ethanol) == 1 and len(ethanol[0][2]) == 2
    )  # the C-O bond turns O-H    assert sampler.rotatable_bonds(molecule("C2H4")) == []


def test_langevin_mean_kinetic_temperature_is_near_target():
    from ase.calculators.emt import EMT

    cluster = Octahedron("Cu", 4, 1)  # 38 atoms
    target_K = 600.0
    frames = sampler.langevin_frames(cluster, EMT(), target_K, 600, 2.0, 5, 200, seed=3)
    assert len(frames) == 120
    assert all(f.info["temperature_K"] == target_K for f in frames)
    mean_K = np.mean([f.info["kinetic_temperature_K"] for f in frames])
    # 38 atoms: one frame's kinetic temperature scatters by ~sqrt(2/3N) ~ 13%; the mean of
    # 120 (correlated) frames lies within ~10% of the target
    assert mean_K == pytest.approx(target_K, rel=0.12)
    assert frames[-1].calc is None


def test_diverse_choice_returns_distinct_frames():
    from ase.calculators.emt import EMT

    frames = sampler.langevin_frames(Octahedron("Cu", 3, 0), EMT(), 500.0, 100, 2.0, 2, 0, 1)
    frames += [frames[0].copy() for _ in range(10)]  # duplicates must not be chosen twice
    chosen = sampler.diverse_choice(frames, 20)
    assert len(chosen) == len(set(chosen)) == 20
    positions = [frames[k].positions.tobytes() for k in chosen]
    assert len(set(positions)) == 20
    assert sorted(sampler.diverse_choice(frames[:3], 10)) == [0, 1, 2]


def test_sampler_jobs_on_an_executor_give_the_same_frames():
    from concurrent.futures import ThreadPoolExecutor

    from ase.calculators.emt import EMT

    starts = [Octahedron("Cu", 3, 0), Octahedron("Cu", 2, 0)]
    args = (lambda atoms: EMT(), [300.0, 800.0], 20, 2.0, 5, 4, False, 3)
    here = sampler.sample_frames(starts, *args)
    with ThreadPoolExecutor(2) as pool:
        there = sampler.sample_frames(starts, *args, executor=pool)
    assert len(here) == len(there) == 2 * 2 * 4
    for a, b in zip(here, there, strict=True):
        assert np.array_equal(a.positions, b.positions) and a.info == b.info
    assert [(f.info["start_index"], f.info["temperature_K"]) for f in there[::4]] == [
        (0, 300.0), (0, 800.0), (1, 300.0), (1, 800.0)
    ]  # fmt: skip


def test_yardstick_choice_avoids_the_chosen_frames():
    picked = sampler.yardstick_choice(20, [0, 3, 5], 6, seed=0)
    assert len(picked) == len(set(picked)) == 6 and not {0, 3, 5} & set(picked)
    assert picked == sorted(picked) == sampler.yardstick_choice(20, [0, 3, 5], 6, seed=0)
    assert sampler.yardstick_choice(4, [0, 1, 2], 6, seed=0) == [3]
    assert sampler.yardstick_choice(4, [0, 1, 2, 3], 6, seed=0) == []


def test_a_failed_sampler_md_is_reported_and_the_others_kept():
    from ase import Atoms
    from ase.calculators.emt import EMT

    si2 = Atoms("Si2", positions=[(0, 0, 0), (0, 0, 2.3)])  # EMT has no parameters for Si
    args = (lambda atoms: EMT(), [300.0], 20, 2.0, 5, 0, False, 0)
    reasons = []
    frames = sampler.sample_frames([Octahedron("Cu", 2, 0), si2], *args, on_failure=reasons.append)
    assert len(frames) == 4 and {f.info["start_index"] for f in frames} == {0}
    assert len(reasons) == 1 and reasons[0].startswith("start 1, conformer 0, 300 K: ")
    with pytest.raises(RuntimeError):
        sampler.sample_frames([si2], *args)

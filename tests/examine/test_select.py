import numpy as np
import pytest
from ase.build import bulk

from eelt import keys
from eelt.examine import select_candidates, structure_fingerprint


def _frames_a10_b1(devi_b: float):
    """Ten rattled copies of fcc Cu (A, frames 0-9) and one bcc Cu (B, frame 10)."""
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    frames = []
    for k in range(10):
        f = a.copy()
        f.rattle(0.01, seed=k)
        f.info[keys.MAX_DEVI_F] = 0.1 + 0.001 * k
        frames.append(f)
    b = bulk("Cu", "bcc", a=2.87, cubic=True).repeat(2)  # 16 atoms: different size too
    b.info[keys.MAX_DEVI_F] = devi_b
    frames.append(b)
    return frames


def test_diverse_picks_the_odd_one_out():
    frames = _frames_a10_b1(devi_b=0.05)
    picked = select_candidates(frames, np.arange(11), 2, "diverse", np.random.default_rng(0))
    assert picked.tolist() == [9, 10]  # highest-deviation A first, then B


def test_diverse_starts_from_highest_deviation():
    frames = _frames_a10_b1(devi_b=0.2)
    picked = select_candidates(frames, np.arange(11), 2, "diverse", np.random.default_rng(0))
    assert picked[0] == 10 and picked[1] in range(10)


def test_random_would_mostly_miss_b_but_stays_within_candidates():
    frames = _frames_a10_b1(devi_b=0.05)
    cands = np.array([1, 3, 4, 7, 10])
    picks = [
        select_candidates(frames, cands, 2, "random", np.random.default_rng(s)) for s in range(40)
    ]
    for p in picks:
        assert len(p) == 2 and len(set(p.tolist())) == 2 and set(p.tolist()) <= set(cands.tolist())
    hit_b = np.mean([10 in p for p in picks])
    assert 0.2 < hit_b < 0.65  # expected 2/5


@pytest.mark.parametrize("method", ["random", "diverse", "representative"])
def test_caps_all_when_fewer_and_deterministic(method):
    frames = _frames_a10_b1(devi_b=0.05)
    cands = np.array([0, 2, 5, 6, 8, 10])
    one = select_candidates(frames, cands, 4, method, np.random.default_rng(11))
    two = select_candidates(frames, cands, 4, method, np.random.default_rng(11))
    assert len(one) == 4 and len(np.unique(one)) == 4 and set(one.tolist()) <= set(cands.tolist())
    np.testing.assert_array_equal(one, two)
    assert sorted(select_candidates(frames, cands, 10, method, 0).tolist()) == cands.tolist()
    assert select_candidates(frames, cands, 0, method, 0).size == 0
    assert select_candidates(frames, np.array([], dtype=int), 3, method, 0).size == 0


@pytest.mark.parametrize("method", ["diverse", "representative"])
def test_identical_frames_still_unique(method):
    frame = bulk("Cu", "fcc", a=3.61, cubic=True)
    frames = [frame.copy() for _ in range(5)]
    picked = select_candidates(frames, np.arange(5), 3, method, 0)
    assert len(set(picked.tolist())) == 3


def test_representative_takes_the_centre_of_each_group_diverse_its_edges():
    """Two groups of rattled fcc Cu (15 at 3.55 A, 5 at 3.70 A; the second more deviant): both
    rules label one frame of each group with two labels; representative takes the frame
    nearest its group's mean fingerprint, diverse frames at the groups' edges."""
    frames, group = [], []
    for g, (a_A, n, devi) in enumerate(((3.55, 15, 0.1), (3.70, 5, 0.2))):
        for k in range(n):
            f = bulk("Cu", "fcc", a=a_A, cubic=True).repeat(2)
            f.rattle(0.03, seed=100 * g + k)
            f.info[keys.MAX_DEVI_F] = devi + 0.001 * k
            frames.append(f)
            group.append(g)
    group = np.array(group)
    points = np.stack([structure_fingerprint(f, [29]) for f in frames])
    centre_dist = np.zeros(len(frames))
    for g in (0, 1):
        members = group == g
        centre_dist[members] = np.linalg.norm(points[members] - points[members].mean(0), axis=1)
    nearest = {
        g: int(np.flatnonzero(group == g)[np.argmin(centre_dist[group == g])]) for g in (0, 1)
    }
    for seed in range(4):
        picked = select_candidates(frames, np.arange(20), 2, "representative", seed)
        assert sorted(picked.tolist()) == sorted(nearest.values()), picked
    diverse = select_candidates(frames, np.arange(20), 2, "diverse", 0)
    assert sorted(group[diverse].tolist()) == [0, 1]
    assert not set(diverse.tolist()) & set(nearest.values())


def test_fingerprint_invariances_and_size_independence():
    el = [29, 79]
    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    big = a.repeat((2, 2, 1))
    fa, fbig = structure_fingerprint(a, el), structure_fingerprint(big, el)
    assert fa.shape == fbig.shape == (3 * 50,)
    np.testing.assert_allclose(fa, fbig, atol=1e-10)
    moved = big.copy()
    moved.positions += [0.3, -1.1, 2.0]
    moved.wrap()
    perm = moved[np.random.default_rng(0).permutation(len(moved))]
    np.testing.assert_allclose(structure_fingerprint(perm, el), fbig, atol=1e-10)
    # Cu-Au pairs land in their own block; Cu-only frame has none there
    alloy = a.copy()
    alloy.numbers[0] = 79
    fal = structure_fingerprint(alloy, el).reshape(3, 50)
    assert fal[1].sum() > 0 and fa.reshape(3, 50)[1].sum() == 0
    with pytest.raises(ValueError, match="not in"):
        structure_fingerprint(alloy, [29])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(candidate_idx=np.array([0, 11])), "out of range"),
        (dict(candidate_idx=np.array([1, 1])), "repeated"),
        (dict(max_n=-1), "max_n"),
        (dict(method="best"), "'random', 'diverse' or 'representative'"),
    ],
)
def test_bad_arguments_named(kwargs, match):
    args = dict(candidate_idx=np.arange(3), max_n=2, method="diverse", rng=0) | kwargs
    with pytest.raises(ValueError, match=match):
        select_candidates(_frames_a10_b1(0.05), **args)


def test_selection_avoids_what_the_window_already_chose():
    from ase.build import bulk

    base = bulk("Cu", "fcc", a=3.6, cubic=True)
    rng = np.random.default_rng(0)
    frames = []
    for k in range(6):
        atoms = base.copy()
        atoms.positions += (0.05 + 0.1 * (k % 3)) * rng.standard_normal(atoms.positions.shape)
        frames.append(atoms)
    earlier = [frames[0].copy(), frames[3].copy()]
    chosen = select_candidates(frames, np.arange(6), 2, "diverse", rng, earlier=earlier)
    assert len(chosen) == 2 and not {0, 3} & set(chosen.tolist())  # identical ones are last
    assert select_candidates(frames, np.arange(6), 0, "diverse", rng, earlier=earlier).size == 0

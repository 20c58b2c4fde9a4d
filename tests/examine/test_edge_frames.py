"""Edge frames: where walkers left the trusted region, as a pure function of trust classes, and
how an examination with too few candidates fills up with them."""

import numpy as np
import pytest
from ase.build import bulk

from eelt import keys
from eelt.config import ExamineConfig
from eelt.examine.examination import Allowance, Classified, examine_frames
from eelt.examine.select import edge_frames
from eelt.examine.trust import ACCURATE, CANDIDATE, FAILED, classify


def test_edge_is_the_last_frame_below_trust_hi_before_the_first_failed_one():
    a, c, f = ACCURATE, CANDIDATE, FAILED
    classes = [
        a,
        a,
        c,
        f,
        f,
        a,
        f,  # walker x: leaves after frame 2; later frames do not count
        f,
        f,
        a,  # walker y: failed from its first frame
        a,
        c,
        a,
    ]  # walker z: never fails, no edge
    walkers = ["x"] * 7 + ["y"] * 3 + ["z"] * 3
    np.testing.assert_array_equal(edge_frames(np.array(classes), walkers), [2, 7])


def test_a_labeled_frame_before_the_edge_gives_way():
    a, c, f = ACCURATE, CANDIDATE, FAILED
    classes = np.array([a, c, f, f, a, f, f])
    walkers = ["x"] * 3 + ["y"] * 4
    usable = np.array([True, False, True, True, False, True, True])
    # x: frame 1 is labeled already, frame 0 is the last usable one below trust_hi;
    # y: its only frame below trust_hi (4) comes after its first failed one (3): frame 3
    np.testing.assert_array_equal(edge_frames(classes, walkers, usable), [0, 3])
    # the start frame labeled already (as every walker of a run starts from it): the first
    # failed frame instead
    np.testing.assert_array_equal(edge_frames(np.array([a, f, f]), ["z"] * 3, [0, 1, 1]), [1])
    assert edge_frames(np.array([a, f]), ["z"] * 2, [0, 0]).size == 0


def test_edges_per_trajectory_even_when_interleaved():
    classes = np.array([ACCURATE, ACCURATE, FAILED, ACCURATE, FAILED])
    np.testing.assert_array_equal(edge_frames(classes, ["a", "b", "a", "b", "b"]), [0, 3])
    assert edge_frames(np.array([], dtype=int), []).size == 0
    with pytest.raises(ValueError, match="2 trajectory keys for 3 frames"):
        edge_frames(classes[:3], ["a", "b"])


def _walker(name: str, devi: list[float], segment: int = 0, shift: float = 0.0) -> list:
    base = bulk("Cu", "fcc", a=3.61, cubic=True)
    frames = []
    for step, d in enumerate(devi):
        atoms = base.copy()
        atoms.rattle(0.02 + 0.01 * step + shift, seed=step + int(100 * shift))
        atoms.info.update({keys.MAX_DEVI_F: d, keys.WALKER: name, keys.SEGMENT: segment})
        frames.append(atoms)
    return frames


def _examine(frames, cfg, cap, tmp_path):
    devi = np.array([f.info[keys.MAX_DEVI_F] for f in frames])
    levels = {"trust_lo_eV_per_A": 0.05, "trust_hi_eV_per_A": 0.25, "trust_source": "config"}
    classified = Classified(devi, levels, classify(devi, 0.05, 0.25), "_eV_per_A")
    hashes = [f"h{i}" for i in range(len(frames))]
    report = examine_frames(
        frames, hashes, set(), classified, cfg, Allowance(cap, None, 0), (0,), tmp_path
    )
    return report, hashes


def test_mostly_failed_frames_fill_up_with_edge_frames(tmp_path):
    # three walkers, nearly every frame above trust_hi: one candidate in all
    frames = (
        _walker("w0", [0.02, 0.04, 0.6, 0.9, 1.2])  # edge: frame 1 (accurate)
        + _walker("w0", [0.03, 0.4, 0.8], segment=1, shift=0.1)  # a restart: edge frame 5
        + _walker("w1", [0.1, 0.5, 0.7, 0.9], shift=0.2)  # edge: frame 8, also the candidate
        + _walker("w2", [0.5, 0.6], shift=0.3)  # failed from the start: edge frame 12
    )
    report, hashes = _examine(frames, ExamineConfig(), cap=10, tmp_path=tmp_path)
    assert report["n_failed"] == 10 and report["n_candidate"] == 1
    assert report["n_selected"] == 4 and report["n_edge_frames"] == 3
    assert sorted(report["candidate_hashes"]) == sorted(["h8", "h1", "h5", "h12"])
    # the cap holds: room for one edge frame beside the candidate
    report, _ = _examine(frames, ExamineConfig(), cap=2, tmp_path=tmp_path)
    assert report["n_selected"] == 2 and report["n_edge_frames"] == 1
    assert "h8" in report["candidate_hashes"]
    # off: the candidate alone
    report, _ = _examine(frames, ExamineConfig(edge_frames=False), cap=10, tmp_path=tmp_path)
    assert report["n_selected"] == 1 and report["n_edge_frames"] == 0


def test_enough_candidates_add_no_edge_frame(tmp_path):
    frames = _walker("w0", [0.1, 0.15, 0.2, 0.6, 0.9])
    report, _ = _examine(frames, ExamineConfig(), cap=2, tmp_path=tmp_path)
    assert report["n_selected"] == 2 and report["n_edge_frames"] == 0

"""The pure parts of the streaming loop: a round's end, the window's selection, the config."""

import numpy as np
import pytest
from ase.build import bulk

from eelt.config import ConfigError
from eelt.streaming.examine import walker_test_frames
from eelt.streaming.rounds import RoundNumbers, close_round, window_accurate_ratio
from eelt.streaming.select import select_in_window
from tests.streaming.stream_config import streaming_config


def segment(generation=1, n_total=10, n_accurate=5, n_selected=1):
    return {
        "generation": generation,
        "n_total": n_total,
        "n_accurate": n_accurate,
        "n_selected": n_selected,
    }


def numbers(**kw):
    base = dict(
        window=[segment(), segment()],
        exploring=1,
        newest_test=None,
        labels=10,
        core_hours=0.0,
        pending=0,
        unseen=0,
        generations=1,
    )
    return RoundNumbers(**{**base, **kw})


@pytest.fixture
def config(tmp_path):
    return streaming_config(tmp_path)  # generation_labels 3, window 2, max_labels 23


def test_a_generation_starts_once_enough_labels_are_chosen(config):
    assert close_round(4, numbers(pending=2), config)["trigger"] is None
    record = close_round(4, numbers(pending=3), config)
    assert record["trigger"] == 2 and record["end"] is None


def test_the_label_budget_ends_the_run_with_a_last_generation_for_what_is_unseen(config):
    record = close_round(4, numbers(labels=23, pending=1, unseen=2), config)
    assert record["end"]["status"] == "budget_exhausted"
    assert record["trigger"] == 2
    record = close_round(4, numbers(labels=23), config)  # nothing unseen: no generation
    assert record["end"]["status"] == "budget_exhausted" and record["trigger"] is None


def test_the_last_generation_ends_the_run_on_max_iterations(tmp_path):
    config = streaming_config(tmp_path, max_iterations=2)
    record = close_round(4, numbers(pending=3), config)
    assert record["trigger"] == 2
    assert record["end"]["status"] == "max_iterations"


def test_convergence_needs_a_whole_window_of_the_newest_generation(config):
    accurate = [segment(n_accurate=10, n_selected=0)] * 2
    assert window_accurate_ratio(accurate, 1, 2) == 1.0
    assert close_round(4, numbers(window=accurate), config)["end"]["status"] == "converged"
    mixed = [segment(generation=0, n_accurate=10), segment(n_accurate=10)]
    assert window_accurate_ratio(mixed, 1, 2) is None
    assert close_round(4, numbers(window=mixed), config)["end"] is None
    assert window_accurate_ratio(accurate[:1], 1, 2) is None  # not full yet


def test_a_window_without_candidates_stalls(config):
    quiet = [segment(n_accurate=5, n_selected=0)] * 2
    assert close_round(4, numbers(window=quiet), config)["end"]["status"] == "stalled"


def test_test_frames_of_a_round_are_shared_among_walkers():
    assert [walker_test_frames(5, 2, w) for w in range(2)] == [3, 2]
    assert sum(walker_test_frames(7, 3, w) for w in range(3)) == 7


def test_window_selection_avoids_what_the_window_already_chose():
    base = bulk("Cu", "fcc", a=3.6, cubic=True)
    rng = np.random.default_rng(0)
    frames = []
    for k in range(6):
        atoms = base.copy()
        atoms.positions += (0.05 + 0.1 * (k % 3)) * rng.standard_normal(atoms.positions.shape)
        frames.append(atoms)
    earlier = [frames[0].copy(), frames[3].copy()]
    chosen = select_in_window(frames, np.arange(6), 2, "diverse", earlier, rng)
    assert len(chosen) == 2 and not {0, 3} & set(chosen.tolist())  # identical ones are last
    assert select_in_window(frames, np.arange(6), 0, "diverse", earlier, rng).size == 0


def test_config_refuses_what_streaming_does_not_do(tmp_path):
    cfg = streaming_config(tmp_path)
    assert cfg.loop.mode == "streaming"
    data = cfg.model_dump(mode="json")
    from eelt.config import parse_config

    two = {**data, "explore": {**data["explore"], "stages": data["explore"]["stages"] * 2}}
    with pytest.raises(ConfigError, match="one explore stage"):
        parse_config(two)
    calibrated = {
        **data,
        "examine": {
            **data["examine"],
            "trust_levels": "calibrated",
            "target_force_error_eV_per_A": 0.1,
        },
    }
    with pytest.raises(ConfigError, match="calibrated"):
        parse_config(calibrated)
    sync = {**data, "loop": {"max_iterations": 2}}
    assert parse_config(sync).loop.mode == "synchronous"

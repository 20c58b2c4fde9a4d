"""The pure parts of the streaming loop: a round's end, the window's selection, the config."""

import pytest

from eelt.orchestration.streaming.examine import walker_test_frames
from eelt.orchestration.streaming.rounds import RoundNumbers, close_round, window_accurate_ratio
from tests.orchestration.streaming.stream_config import streaming_config


def segment(generation=1, n_total=10, n_accurate=5, n_selected=1, stage=0):
    return {
        "generation": generation,
        "stage": stage,
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
    return streaming_config(tmp_path, stages=1)  # generation_labels 3, window 2, max_labels 23


@pytest.fixture
def staged(tmp_path):
    return streaming_config(tmp_path)  # stage 0: max_iterations 2; stage 1: 10


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
    config = streaming_config(tmp_path, stages=1, max_iterations=2)
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


def test_config_takes_every_stage_and_trust_level_setting(tmp_path):
    cfg = streaming_config(tmp_path)
    assert cfg.loop.mode == "streaming"
    data = cfg.model_dump(mode="json")
    from eelt.config import parse_config

    calibrated = {
        **data,
        "examine": {
            **data["examine"],
            "trust_levels": "calibrated",
            "target_force_error_eV_per_A": 0.1,
        },
    }
    assert parse_config(calibrated).examine.trust_levels == "calibrated"
    sync = {**data, "loop": {"max_iterations": 2}}
    assert parse_config(sync).loop.mode == "synchronous"


def test_a_converged_stage_gives_way_to_the_next(staged):
    accurate = [segment(n_accurate=10, n_selected=0)] * 2
    record = close_round(4, numbers(window=accurate), staged)
    assert record["end"] is None and record["next_stage"] == 1
    assert record["stage_end"]["status"] == "converged"
    # the last stage converging ends the run
    last = [segment(n_accurate=10, n_selected=0, stage=1)] * 2
    record = close_round(9, numbers(window=last, stage=1), staged)
    assert record["end"]["status"] == "converged" and record["next_stage"] is None
    assert record["end"]["detail"].startswith("stage 1: accurate ratio")
    # a window that still holds the previous stage's segments does not count
    mixed = [segment(n_accurate=10, n_selected=0), segment(n_accurate=10, stage=1)]
    assert close_round(9, numbers(window=mixed, stage=1), staged)["end"] is None


def test_a_stage_ends_with_its_max_iterations_th_generation(staged):
    record = close_round(4, numbers(pending=3, stage_generations=0), staged)
    assert record["trigger"] == 2 and record["next_stage"] is None
    record = close_round(4, numbers(pending=3, stage_generations=1), staged)
    assert record["trigger"] == 2 and record["next_stage"] == 1
    assert record["stage_end"] == {"status": "max_iterations", "detail": "its max_iterations 2"}
    # the round after that close still ran in stage 0: it decides nothing about the stage
    record = close_round(5, numbers(pending=3, stage_generations=2, stage_ending=True), staged)
    assert record["stage_end"] is None and record["next_stage"] is None


def test_a_stage_budget_ends_the_stage_and_the_last_ends_the_run(tmp_path):
    config = streaming_config(tmp_path)
    data = config.model_dump(mode="json")
    for stage in data["explore"]["stages"]:
        stage["max_labels"] = 5
    from eelt.config import parse_config

    config = parse_config(data)
    record = close_round(4, numbers(stage_labels=5), config)
    assert record["stage_end"]["status"] == "budget_exhausted" and record["next_stage"] == 1
    assert record["end"] is None
    record = close_round(9, numbers(stage=1, stage_labels=5, unseen=2), config)
    assert record["end"]["status"] == "budget_exhausted" and record["trigger"] == 2
    assert record["end"]["detail"] == "stage 1: 5 labels of its max_labels 5"


def test_the_target_error_counts_only_for_a_generation_that_saw_the_stage(tmp_path):
    config = streaming_config(tmp_path)
    data = config.model_dump(mode="json")
    data["examine"]["target_force_error_eV_per_A"] = 0.1
    from eelt.config import parse_config

    config = parse_config(data)
    good = {"force_rmse_meV_per_A": 50.0}
    record = close_round(9, numbers(stage=1, newest_test=good, newest_covers_stage=False), config)
    assert record["end"] is None
    record = close_round(9, numbers(stage=1, newest_test=good), config)
    assert record["end"]["status"] == "converged"


def test_a_test_error_that_stopped_improving_stalls_the_run(tmp_path):
    config = streaming_config(tmp_path, stall_iterations=2)  # stall_min_improvement 0.05
    low = (0.0, 0.01)  # the accurate ratios of the generations in between: below 0.05
    record = close_round(4, numbers(stall=(97.0, 100.0), stall_ratios=low), config)
    assert record["end"]["status"] == "stalled"
    assert close_round(4, numbers(stall=(90.0, 100.0), stall_ratios=low), config)["end"] is None
    assert close_round(4, numbers(stall=(None, None), stall_ratios=low), config)["end"] is None
    # a run whose walkers mostly stay accurate is not stalled by a flat test error
    learning = numbers(stall=(97.0, 100.0), stall_ratios=(0.01, 0.6))
    assert close_round(4, learning, config)["end"] is None

"""Who walks in an explore stage: the walkers, their names and where they start."""


def test_a_stage_starts_from_its_files_the_system_or_the_previous_trajectories():
    from ase import Atoms

    from eelt.config import parse_config
    from eelt.explore.walkers import choose_starts

    def frame(x, devi):
        atoms = Atoms("Cu2", positions=[[0, 0, 0], [x, 0, 0]])
        atoms.info["max_devi_f"] = devi
        return atoms

    previous = [[frame(2.0, 0.02), frame(2.1, 0.2)], [frame(2.2, 0.04), frame(2.3, 0.001)], []]
    system, files = [frame(2.5, 0.0)], [frame(2.6, 0.0), frame(2.7, 0.0)]
    base = {
        "name": "t",
        "system": {"structures": ["x.xyz"]},
        "label": {"kind": "emt"},
        "examine": {"trust_lo_eV_per_A": 0.05, "trust_hi_eV_per_A": 0.3},
    }

    def starts(second):
        first = {"temperatures_K": [300]}
        cfg = parse_config(
            {**base, "explore": {"stages": [first, {"temperatures_K": [600], **second}]}}
        )
        got, source = choose_starts(
            cfg.explore.stages[1], system, files, previous, 0.05, "max_devi_f"
        )
        return [round(a.positions[1, 0], 3) for a in got], source

    assert starts({}) == ([2.5], "system")
    assert starts({"starts": ["a.xyz"]}) == ([2.6, 2.7], "stage files")
    assert starts({"starts": "last"}) == ([2.1, 2.3], "last frames of the previous stage")
    assert starts({"starts": "last", "max_starts": 1}) == (
        [2.1],
        "last frames of the previous stage",
    )
    # below trust_lo 0.05, the most uncertain first, as many as there were walkers
    assert starts({"starts": "uncertain"}) == (
        [2.2, 2.0],
        "most uncertain accurate frames of the previous stage",
    )
    nothing = [[], []]  # the previous round's segments failed: the system's structures
    cfg = parse_config(
        {
            **base,
            "explore": {
                "stages": [{"temperatures_K": [300]}, {"temperatures_K": [600], "starts": "last"}]
            },
        }
    )
    got, source = choose_starts(cfg.explore.stages[1], system, files, nothing, 0.05, "max_devi_f")
    assert len(got) == 1 and source == "system (the previous stage left no frame)"

    first = parse_config(
        {**base, "explore": {"stages": [{"temperatures_K": [300], "starts": "last"}]}}
    )
    got, source = choose_starts(first.explore.stages[0], system, files, None, None, "max_devi_f")
    assert len(got) == 1 and source == "system"  # the run's first exploration
    assert got[0].info["from_max_devi_f"] == 0.0  # where it came from


def test_walkers_are_every_start_condition_and_repeat_with_their_names():
    from ase import Atoms

    from eelt.config import parse_config
    from eelt.explore.walkers import stage_walkers

    stage = {"temperatures_K": [300, 600], "pressures_bar": [1.0], "walkers_per_condition": 2}
    cfg = parse_config(
        {
            "name": "t",
            "system": {"structures": ["x.xyz"]},
            "label": {"kind": "emt"},
            "explore": {"stages": [{**stage, "ensemble": "npt"}]},
        }
    )
    starts = [Atoms("Cu", cell=[3, 3, 3], pbc=True), Atoms("Cu2", cell=[4, 4, 4], pbc=True)]
    walkers = stage_walkers(cfg.explore.stages[0], starts)
    assert [w.name for w in walkers] == [
        "w000-s0-T300-P1", "w001-s0-T300-P1", "w002-s0-T600-P1", "w003-s0-T600-P1",
        "w004-s1-T300-P1", "w005-s1-T300-P1", "w006-s1-T600-P1", "w007-s1-T600-P1",
    ]  # fmt: skip
    assert [len(w.start) for w in walkers] == [1] * 4 + [2] * 4
    assert [w.temperature_K for w in walkers[:4]] == [300.0, 300.0, 600.0, 600.0]


def test_sampler_starts_take_the_next_block_of_thermal_frames_each_time():
    import pytest
    from ase import Atoms

    from eelt.config import ConfigError, parse_config
    from eelt.explore.walkers import choose_starts

    def frame(x):
        return Atoms("Cu2", positions=[[0, 0, 0], [x, 0, 0]])

    system, sampler = [frame(2.5)], [frame(2.0 + 0.1 * k) for k in range(5)]
    data = {
        "name": "t",
        "system": {"structures": ["x.xyz"]},
        "label": {"kind": "emt"},
        "init": {"sampler": {"kind": "emt"}},
        "explore": {"stages": [{"temperatures_K": [300], "starts": "sampler", "max_starts": 2}]},
    }
    stage = parse_config(data).explore.stages[0]

    def starts(rotation, frames=sampler, st=stage):
        got, source = choose_starts(st, system, [], None, None, "max_devi_f", "", frames, rotation)
        return [round(a.positions[1, 0], 3) for a in got], source

    assert starts(0) == ([2.0, 2.1], "thermal sampler frames 0, 1")
    assert starts(1) == ([2.2, 2.3], "thermal sampler frames 2, 3")
    assert starts(2) == ([2.4, 2.0], "thermal sampler frames 4, 0")  # wraps around
    assert starts(0, []) == ([2.5], "system (no thermal sampler frame)")
    one = parse_config(
        {**data, "explore": {"stages": [{"temperatures_K": [300], "starts": "sampler"}]}}
    )
    assert starts(3, st=one.explore.stages[0]) == (
        [2.3],
        "thermal sampler frames 3",
    )  # as many as the system
    data["init"] = {}
    with pytest.raises(ConfigError, match=r"explore.stages.0: starts 'sampler' needs the thermal"):
        parse_config(data)

from pathlib import Path

import pytest

from eelt.config import ConfigError, load_config, parse_config

BASE = {
    "name": "x",
    "system": {"structures": ["a.xyz"]},
    "explore": {"stages": [{"temperatures_K": [300]}]},
    "label": {"kind": "emt"},
}


def with_(**sections):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    data.update(sections)
    return data


def test_minimal_config_fills_defaults():
    cfg = parse_config(BASE)
    assert cfg.train.ensemble_size == 4
    assert cfg.examine.trust_lo_eV_per_A < cfg.examine.trust_hi_eV_per_A
    assert cfg.execution.host == "127.0.0.1"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"^label\.xcc: unknown key$"):
        parse_config(with_(label={"kind": "pyscf", "xcc": "pbe"}))


def test_negative_temperature_is_named():
    with pytest.raises(
        ConfigError, match=r"explore\.stages\.0\.temperatures_K\.0: .*greater than 0"
    ):
        parse_config(with_(explore={"stages": [{"temperatures_K": [-5]}]}))


def test_trust_lo_above_hi_is_one_clear_error():
    with pytest.raises(ConfigError) as info:
        parse_config(with_(examine={"trust_lo_eV_per_A": 0.5, "trust_hi_eV_per_A": 0.1}))
    assert (
        str(info.value) == "examine: trust_lo_eV_per_A (0.5) must be below trust_hi_eV_per_A (0.1)"
    )


def test_unknown_labeler_kind_lists_allowed():
    with pytest.raises(ConfigError, match="kind 'vasp' is not one of 'pyscf', 'xtb', 'emt'"):
        parse_config(with_(label={"kind": "vasp"}))


def test_every_problem_reported_once():
    with pytest.raises(ConfigError) as info:
        parse_config(with_(bogus=1, train={"steps": 0}))
    lines = str(info.value).splitlines()
    assert sorted(lines) == ["bogus: unknown key", "train.steps: Input should be greater than 0"]


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)


EXAMPLES = sorted(
    p.parent.name for p in (Path(__file__).parent.parent / "examples").glob("*/eelt.yaml")
)


def test_every_example_is_checked():
    assert {"water", "water-mace", "cu-emt", "ethanol-metad"} <= set(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_validate(example):
    from eelt.orchestration.rundir import read_structures

    path = Path(__file__).parent.parent / "examples" / example / "eelt.yaml"
    cfg, base = load_config(path)
    assert read_structures(cfg.system, base)


def test_examine_options_are_checked_together():
    with pytest.raises(ConfigError, match="calibrated' needs target_force_error_eV_per_A"):
        parse_config(with_(examine={"trust_levels": "calibrated"}))
    with pytest.raises(ConfigError, match="exactly one of adaptive_n_candidates"):
        parse_config(with_(examine={"trust_levels": "adaptive"}))
    with pytest.raises(ConfigError, match=r"^examine\.test_frames: .*greater than or equal to 0"):
        parse_config(with_(examine={"test_frames": -1}))
    cfg = parse_config(with_(examine={"test_frames": 0}))
    assert cfg.examine.test_frames == 0


def test_stage_trust_overrides_are_checked_against_the_effective_levels():
    stage = {"temperatures_K": [300], "trust_lo_eV_per_A": 0.3}  # above examine's hi 0.25
    with pytest.raises(ConfigError, match=r"^explore\.stages\.0: trust_lo_eV_per_A \(0\.3\)"):
        parse_config(with_(explore={"stages": [stage]}))


def test_budgets_may_change_on_resume_but_not_the_science():
    a = parse_config(with_(explore={"stages": [{"temperatures_K": [300], "max_labels": 10}]}))
    b = parse_config(with_(explore={"stages": [{"temperatures_K": [300], "max_labels": 50}]}))
    assert a.science() == b.science()
    c = parse_config(with_(explore={"stages": [{"temperatures_K": [300], "max_candidates": 3}]}))
    assert a.science() != c.science()

"""Every custom rule of the config (the model and field validators, and the bounds and patterns
beyond a plain "> 0"): a minimal config that breaks exactly that rule fails with a message that
names the field, and the nearest valid value passes."""

import re

import pytest

from eelt.config import ConfigError, parse_config

BASE = {
    "name": "x",
    "system": {"structures": ["a.xyz"]},
    "explore": {"stages": [{"temperatures_K": [300]}]},
    "label": {"kind": "emt"},
}

DISTANCE = {"kind": "distance", "atoms": [0, 1]}


def config(**sections):
    """BASE with whole sections replaced; ``stage`` merges into the one exploration stage and
    ``explore`` into the explore section."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    stage = {"temperatures_K": [300], **sections.pop("stage", {})}
    data["explore"] = {"stages": [stage], **sections.pop("explore", {})}
    data.update(sections)
    return data


def metad(**overrides):
    return {"kind": "metadynamics", "cvs": [DISTANCE], "sigma": [0.1], **overrides}


# (id, config that breaks the rule, regex the message must match: the field, then the rule,
#  config that keeps the rule: the nearest valid value)
RULES = [
    # CVConfig._check
    (
        "cv_atom_count",
        config(stage={"biases": [metad(cvs=[{"kind": "angle", "atoms": [0, 1]}])]}),
        r"^explore\.stages\.0\.biases\.0\.cvs\.0: a angle CV needs atoms: 3 atom indices$",
        config(stage={"biases": [metad(cvs=[{"kind": "angle", "atoms": [0, 1, 2]}])]}),
    ),
    (
        "cv_coordination_groups",
        config(
            stage={"biases": [metad(cvs=[{"kind": "coordination", "group_a": [0], "r0_A": 1}])]}
        ),
        r"^explore\.stages\.0\.biases\.0\.cvs\.0: a coordination CV needs group_a, group_b",
        config(
            stage={
                "biases": [
                    metad(cvs=[{"kind": "coordination", "group_a": [0], "group_b": [1], "r0_A": 1}])
                ]
            }
        ),
    ),
    (
        "cv_torch_function",
        config(stage={"biases": [metad(cvs=[{"kind": "torch", "function": "pkg.mod.f"}])]}),
        r"^explore\.stages\.0\.biases\.0\.cvs\.0: a torch CV needs function",
        config(stage={"biases": [metad(cvs=[{"kind": "torch", "function": "pkg.mod:f"}])]}),
    ),
    (
        "cv_name_pattern",
        config(stage={"biases": [metad(cvs=[{**DISTANCE, "name": "d-1"}])]}),
        r"^explore\.stages\.0\.biases\.0\.cvs\.0\.name: String should match pattern",
        config(stage={"biases": [metad(cvs=[{**DISTANCE, "name": "d_1"}])]}),
    ),
    # MetadynamicsConfig._check and its bound
    (
        "metad_sigma_per_cv",
        config(stage={"biases": [metad(sigma=[0.1, 0.2])]}),
        r"^explore\.stages\.0\.biases\.0: sigma has 2 widths for 1 cvs$",
        config(stage={"biases": [metad(cvs=[DISTANCE, DISTANCE], sigma=[0.1, 0.2])]}),
    ),
    (
        "metad_biasfactor_above_1",
        config(stage={"biases": [metad(biasfactor=1.0)]}),
        r"^explore\.stages\.0\.biases\.0\.biasfactor: .*greater than 1",
        config(stage={"biases": [metad(biasfactor=1.01)]}),
    ),
    # StageConfig._check
    (
        "npt_needs_pressures",
        config(stage={"ensemble": "npt"}),
        r"^explore\.stages\.0: ensemble 'npt' needs pressures_bar$",
        config(stage={"ensemble": "npt", "pressures_bar": [1.0]}),
    ),
    (
        "pressures_need_npt",
        config(stage={"pressures_bar": [1.0]}),
        r"^explore\.stages\.0: pressures_bar needs ensemble 'npt', not 'nvt'$",
        config(stage={"pressures_bar": [1.0], "ensemble": "npt"}),
    ),
    (
        "ramp_needs_a_rampable_coupling",
        config(stage={"temperature_ramp_to_K": 600, "thermostat": "nose-hoover"}),
        r"^explore\.stages\.0: temperature_ramp_to_K needs nvt .*not nvt with nose-hoover",
        config(stage={"temperature_ramp_to_K": 600, "thermostat": "bussi"}),
    ),
    (
        "starts_not_empty",
        config(stage={"starts": []}),
        r"^explore\.stages\.0: starts: give 'system', 'last', 'uncertain', 'sampler' or a list of files$",
        config(stage={"starts": ["a.xyz"]}),
    ),
    (
        "one_plumed_bias",
        config(stage={"biases": [{"kind": "plumed", "script": "x"}] * 2}),
        r"^explore\.stages\.0: biases: at most one plumed bias$",
        config(stage={"biases": [{"kind": "plumed", "script": "x"}, {"kind": "uncertainty"}]}),
    ),
    # ExploreConfig: the field validator and the bounded fractions
    (
        "bond_fraction_0_or_at_least_1",
        config(explore={"max_bond_fraction": 0.5}),
        r"^explore\.max_bond_fraction: must be 0 \(off\) or >= 1, got 0\.5$",
        config(explore={"max_bond_fraction": 0.0}),
    ),
    (
        "min_distance_fraction_below_1",
        config(explore={"min_distance_fraction": 1.0}),
        r"^explore\.min_distance_fraction: .*less than 1",
        config(explore={"min_distance_fraction": 0.99}),
    ),
    (
        "restart_timestep_factor_at_most_1",
        config(explore={"restart_timestep_factor": 1.5}),
        r"^explore\.restart_timestep_factor: .*less than or equal to 1",
        config(explore={"restart_timestep_factor": 1.0}),
    ),
    # ExamineConfig._lo_below_hi (trust_lo < trust_hi, calibrated needs a target and adaptive
    # needs exactly one setting are in test_config.py) and its bounds
    (
        "relative_lo_below_hi",
        config(examine={"trust_lo_relative": 0.2, "trust_hi_relative": 0.2}),
        r"^examine: trust_lo_relative \(0\.2\) must be below trust_hi_relative \(0\.2\)$",
        config(examine={"trust_lo_relative": 0.19, "trust_hi_relative": 0.2}),
    ),
    (
        "calibrated_needs_absolute_deviation",
        config(
            examine={
                "deviation": "relative",
                "trust_levels": "calibrated",
                "target_force_error_eV_per_A": 0.1,
            }
        ),
        r"^examine: trust_levels 'calibrated' sets absolute levels .*deviation 'absolute'$",
        config(
            examine={
                "deviation": "absolute",
                "trust_levels": "calibrated",
                "target_force_error_eV_per_A": 0.1,
            }
        ),
    ),
    (
        "trust_lo_bounds_ordered",
        config(examine={"trust_lo_bounds_eV_per_A": [0.3, 0.1]}),
        r"^examine: trust_lo_bounds_eV_per_A \(0\.3, 0\.1\): the first must not exceed",
        config(examine={"trust_lo_bounds_eV_per_A": [0.1, 0.1]}),
    ),
    (
        "trust_hi_factor_above_1",
        config(examine={"trust_hi_factor": 1.0}),
        r"^examine\.trust_hi_factor: .*greater than 1",
        config(examine={"trust_hi_factor": 1.01}),
    ),
    (
        "adaptive_fraction_at_most_1",
        config(examine={"trust_levels": "adaptive", "adaptive_fraction": 1.5}),
        r"^examine\.adaptive_fraction: .*less than or equal to 1",
        config(examine={"trust_levels": "adaptive", "adaptive_fraction": 1.0}),
    ),
    (
        "converged_accurate_ratio_at_most_1",
        config(examine={"converged_accurate_ratio": 1.01}),
        r"^examine\.converged_accurate_ratio: .*less than or equal to 1",
        config(examine={"converged_accurate_ratio": 1.0}),
    ),
    # InitConfig bound
    (
        "cell_strain_below_half",
        config(init={"cell_strain": 0.5}),
        r"^init\.cell_strain: .*less than 0\.5",
        config(init={"cell_strain": 0.49}),
    ),
    # labelers
    (
        "max_failed_fraction_at_most_1",
        config(label={"kind": "emt", "max_failed_fraction": 1.5}),
        r"^label\.max_failed_fraction: .*less than or equal to 1",
        config(label={"kind": "emt", "max_failed_fraction": 1.0}),
    ),
    (
        "pyscf_grid_level_at_most_9",
        config(label={"kind": "pyscf", "grid_level": 10}),
        r"^label\.grid_level: .*less than or equal to 9",
        config(label={"kind": "pyscf", "grid_level": 9}),
    ),
    (
        "pyscf_dispersion_literal",
        config(label={"kind": "pyscf", "dispersion": "d2"}),
        r"^label\.dispersion: got 'd2'; input should be 'd3bj'",
        config(label={"kind": "pyscf", "dispersion": "d4"}),
    ),
    # ModelConfig._check
    (
        "rcut_smth_below_rcut",
        config(train={"model": {"rcut_A": 4.0, "rcut_smth_A": 4.0}}),
        r"^train\.model: rcut_smth_A \(4\.0\) must be below rcut_A \(4\.0\)$",
        config(train={"model": {"rcut_A": 4.0, "rcut_smth_A": 3.9}}),
    ),
    (
        "axis_neuron_within_embedding",
        config(train={"model": {"embedding_widths": [4, 8], "axis_neuron": 9}}),
        r"^train\.model: axis_neuron \(9\) must not exceed the last embedding width \(8\)$",
        config(train={"model": {"embedding_widths": [4, 8], "axis_neuron": 8}}),
    ),
    # TrainConfig._check and its bounds and patterns
    (
        "stop_lr_at_most_start_lr",
        config(train={"start_lr": 1e-3, "stop_lr": 2e-3}),
        r"^train: stop_lr \(0\.002\) must not exceed start_lr \(0\.001\)$",
        config(train={"start_lr": 1e-3, "stop_lr": 1e-3}),
    ),
    (
        "ensemble_of_at_least_2",
        config(train={"ensemble_size": 1}),
        r"^train\.ensemble_size: .*greater than or equal to 2",
        config(train={"ensemble_size": 2}),
    ),
    (
        "batch_size_auto_pattern",
        config(train={"batch_size": "auto:0"}),
        r"^train\.batch_size\.constrained-str: String should match pattern",
        config(train={"batch_size": "auto:1"}),
    ),
    (
        "validation_fraction_below_1",
        config(train={"validation_fraction": 1.0}),
        r"^train\.validation_fraction: .*less than 1",
        config(train={"validation_fraction": 0.99}),
    ),
    (
        "patience_anneal_fraction_at_most_1",
        config(train={"patience_anneal_fraction": 1.5}),
        r"^train\.patience_anneal_fraction: .*less than or equal to 1",
        config(train={"patience_anneal_fraction": 1.0}),
    ),
    (
        "stacks_number_or_auto",
        config(train={"stacks": "all"}),
        r"^train\.stacks\.literal\['auto'\]: got 'all'",
        config(train={"stacks": 3}),
    ),
    # ExecutionConfig._jobs (kind 'dask' needs scheduler_address: tests/orchestration/test_execution.py)
    (
        "min_and_max_jobs_together",
        config(execution={"kind": "slurm", "max_jobs": 4}),
        r"^execution: execution: give both min_jobs and max_jobs, or neither$",
        config(execution={"kind": "slurm", "min_jobs": 0, "max_jobs": 4}),
    ),
    (
        "min_jobs_at_most_max_jobs",
        config(execution={"kind": "slurm", "min_jobs": 5, "max_jobs": 4}),
        r"^execution: execution: min_jobs \(5\) must not exceed max_jobs \(4\)$",
        config(execution={"kind": "slurm", "min_jobs": 4, "max_jobs": 4}),
    ),
    # LoopConfig bound
    (
        "stall_min_improvement_below_1",
        config(loop={"stall_min_improvement": 1.0}),
        r"^loop\.stall_min_improvement: .*less than 1",
        config(loop={"stall_min_improvement": 0.99}),
    ),
    # RunConfig: its pattern and its own check (a stage's levels: test_config.py)
    (
        "run_name_pattern",
        config(name="my run"),
        r"^name: String should match pattern",
        config(name="my-run_1.0"),
    ),
    (
        "some_initial_data",
        config(init={"n_perturbed": 0}),
        r"^init: n_perturbed is 0, init\.sampler\.kind is none and no init\.data is given: "
        r"no initial data$",
        config(init={"n_perturbed": 0, "data": ["init.extxyz"]}),
    ),
    (
        "at_least_one_structure",
        config(system={"structures": []}),
        r"^system\.structures: List should have at least 1 item",
        config(system={"structures": ["a.xyz"]}),
    ),
]


@pytest.mark.parametrize("bad, message, good", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule_names_its_field_and_a_valid_value_passes(bad, message, good):
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    text = str(info.value)
    assert re.search(message, text, re.MULTILINE), text
    # exactly that rule is broken: one line, or one per member of a union, all on the field
    assert len({tuple(line.split(":")[0].split(".")[:2]) for line in text.splitlines()}) == 1
    parse_config(good)

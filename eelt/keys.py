"""Names of per-frame quantities, as stored in ``Atoms.info`` / extxyz and calculator results.

Units: energies eV, forces eV/Angstrom, stress eV/Angstrom^3 (ASE convention).
"""

ENERGY = "energy"  # eV
FORCES = "forces"  # eV/Angstrom
STRESS = "stress"  # eV/Angstrom^3, ASE Voigt order

# Ensemble deviation (DeePMD's model_devi definitions), written per explored frame.
MAX_DEVI_F = "max_devi_f"  # eV/Angstrom: max over atoms of sqrt(mean_k |F_k - <F>|^2)
MAX_DEVI_F_REL = (
    "max_devi_f_rel"  # 1: max over atoms of the same / (|<F>| + eps), DeePMD's relative
)
AVG_DEVI_F = "avg_devi_f"  # eV/Angstrom: mean over atoms of the same
DEVI_E = "devi_e"  # eV/atom: std over members of the energy per atom
FORCES_STD = "forces_std"  # eV/Angstrom, per atom (calculator result)
MAX_DEVI_V = "max_devi_v"  # eV/atom: max over the 9 virial components of the std over members
AVG_DEVI_V = "avg_devi_v"  # eV/atom: mean over the 9 components (periodic cells only)

# Provenance of explored frames.
WALKER = "walker"
STEP = "step"
SEGMENT = "segment"  # 0, then 1, 2, ... after each restart from a good frame
TEMPERATURE_K = "temperature_K"  # K, the thermostat's target at that step
PRESSURE_BAR = "pressure_bar"  # bar, the barostat's target (NPT walkers)
BIAS_ENERGY = "bias_energy"  # eV, the enhanced-sampling bias at that frame (cv_<name>: its CVs)
TRUST_CLASS = "trust_class"  # accurate / candidate / failed, as the examination classified it
MODEL_ENERGY = "model_energy"  # eV, the ensemble's mean energy (a prediction, never a label)
KINETIC_TEMPERATURE_K = "kinetic_temperature_K"  # K, instantaneous, from the momenta

# Labels.
SCF_ATTEMPTS = "scf_attempts"  # JSON list of the SCF attempts a label took (label files)

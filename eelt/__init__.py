"""eelt: concurrent learning of machine-learned interatomic potentials.

The loop is explore -> examine -> label -> train, repeated until the ensemble is
uniformly accurate. This package holds the science and the loop; ``flows/`` wraps it
in Prefect.
"""

__version__ = "0.1.0"

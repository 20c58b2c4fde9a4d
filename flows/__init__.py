"""Prefect layer of eelt: the loop's stages as tasks, each iteration a subflow, one flow per run."""

from flows.eelt_flow import PrefectRunner, eelt_run

__all__ = ["PrefectRunner", "eelt_run"]

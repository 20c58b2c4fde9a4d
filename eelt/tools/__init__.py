"""User tools over a run directory or a dataset: report, export, baseline, init."""

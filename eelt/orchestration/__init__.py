"""Orchestration: the two schedules (synchronous, streaming) that compose the stages, the run
directory, budgets and end states, time accounting, progress, execution and preflight.

The stage packages (explore, examine, label, train, model) never import this package."""

"""Evaluation suite: `python -m evals` runs the cases in evals/cases and checks evals/thresholds.yaml."""

from evals.runner import Case, SuiteResult, load_cases, load_thresholds, run_suite

__all__ = ["Case", "SuiteResult", "load_cases", "load_thresholds", "run_suite"]

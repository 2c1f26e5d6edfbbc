"""Shared configuration: the backend parametrisation, Hypothesis profiles (helpers: tests/helpers.py).

Profiles (style point 6): "ci" (default) is derandomized and small, so every run checks
the same examples; "thorough" explores (RMGAP_HYPOTHESIS_PROFILE=thorough pytest).
"""
import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                          print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("RMGAP_HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ["numpy", "torch-cpu"] + (["torch-cuda"] if torch.cuda.is_available() else [])


def pytest_generate_tests(metafunc):
    # A parametrisation, not a fixture, so Hypothesis tests can take it too.
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)

"""Thread counts chosen by problem size, and restored after the block."""
import numpy as np
import torch
from threadpoolctl import threadpool_info

from theory import threads


def test_small_work_gets_one_thread(monkeypatch):
    monkeypatch.delenv("RMGAP_THREADS", raising=False)
    assert threads.for_work(2000 * 4096 * 2000) == 1
    assert 1 <= threads.for_work(1e15) <= threads.available_cores()


def test_override(monkeypatch):
    monkeypatch.setenv("RMGAP_THREADS", "3")
    assert threads.for_work(1.0) == 3


def test_limit_sets_and_restores():
    before_torch = torch.get_num_threads()
    before_blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with threads.limit(1):
        assert torch.get_num_threads() == 1
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        np.ones((3, 3)) @ np.ones((3, 3))
    assert torch.get_num_threads() == before_torch
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before_blas

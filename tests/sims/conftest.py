"""Fixtures shared by the tests on tiny Hugging Face models (tests/sims/hf_tiny.py)."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread, or the threads' contention on a shared machine costs 10x.
    A module asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The word-level tokenizer of hf_tiny, saved once per module."""
    pytest.importorskip("transformers")
    from tests.sims import hf_tiny
    return hf_tiny.tokenizer(tmp_path_factory.mktemp("tok"))

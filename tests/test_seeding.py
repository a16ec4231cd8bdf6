"""Tests start from a known seed (conftest), so a failure repeats; PROBMOD_TEST_SEED changes it."""

import random

import numpy as np
import torch

from .conftest import SESSION_SEED, test_seed


def test_each_test_starts_from_its_own_seed(request):
    seed = test_seed(request.node.nodeid)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(torch.rand(3), expected)
    assert np.random.rand() == np.random.RandomState(seed).rand()
    assert random.random() == random.Random(seed).random()


def test_seeds_differ_between_tests_and_are_stable():
    assert test_seed("a::b") == test_seed("a::b") != test_seed("a::c")
    assert 0 <= test_seed("a::b") < 2**32 and isinstance(SESSION_SEED, int)

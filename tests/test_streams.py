"""sdmp_fast.streams: every seeded stream is a function of its arguments only, and its values stay put."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sdmp_fast.streams import (HostStream, StepRandom, epoch_permutation, pipeline_seed, rank_reseed,
                               sample_generator, seed_step_streams, step_generator, synthetic_generator)

CPU = torch.device("cpu")


def _draws(g: torch.Generator) -> list[float]:
    return torch.rand(4, generator=g).tolist()


# every stream as (name, arguments, draws of it): one argument changed at a time must change the draws
STREAMS = [
    ("epoch_permutation", (100, 3, 2), lambda *a: epoch_permutation(*a).tolist()),
    ("sample_generator", (3, 2, 5), lambda *a: _draws(sample_generator(*a))),
    ("step_generator", (3, 1, 2, 5), lambda *a: _draws(step_generator(*a, CPU))),
    ("pipeline_seed", (3, 1, 2, 5), pipeline_seed),
    ("synthetic_generator", (3, 2, 5, 1), lambda *a: _draws(synthetic_generator(*a, CPU))),
    ("rank_reseed", (3, 1, 7), rank_reseed),
    ("StepRandom", (3, 1), lambda seed, rank: _step_random_draws(StepRandom.create(seed, rank, CPU))),
    ("seed_step_streams", (3, 1, 2, 5), lambda *a: _global_draws(seed_step_streams(*a))),
]


def _step_random_draws(r: StepRandom) -> list:
    return [r.shared.choice(1000), r.shared.coin(), _draws(r.local), _draws(r.shared_device)]


def _global_draws(g: torch.Generator) -> list:
    return [torch.rand(2).tolist(), float(np.random.rand()), random.random(), _draws(g)]


def _disturb() -> None:
    """Move every global stream and run other seeded streams: none of it may reach a stream under test."""
    torch.rand(7)
    np.random.rand(3)
    random.random()
    _draws(step_generator(9, 9, 9, 9, CPU))


@pytest.mark.parametrize("name, args, draw", STREAMS, ids=[s[0] for s in STREAMS])
def test_every_stream_is_a_function_of_its_arguments_only(name, args, draw):
    first = draw(*args)
    _disturb()
    assert draw(*args) == first
    for k in range(len(args)):
        if name == "epoch_permutation" and k == 0:
            continue  # the sample count is the permutation's length, not a seed
        changed = list(args)
        changed[k] += 1
        assert draw(*changed) != first, f"{name}: argument {k} does not reach the stream"


def test_the_values_stay_what_checkpoints_and_runs_were_made_with():
    """Pinned draws: a change here changes resumed runs and every recorded result."""
    assert rank_reseed(3, 1, 7) == 166892052901846798 and rank_reseed(0, 0, 0) == 2804308566066381347
    r = StepRandom.create(3, 1, CPU)
    assert r.shared.choice(1000) == 735 and r.shared.coin() is True
    assert _draws(r.local)[:2] == [0.9984279274940491, 0.39699071645736694]
    assert _draws(r.shared_device)[:2] == [0.38862067461013794, 0.20430153608322144]
    assert epoch_permutation(10, 3, 2).tolist() == [0, 7, 1, 6, 3, 8, 9, 4, 2, 5]
    assert _draws(sample_generator(3, 2, 5))[:2] == [0.7510278820991516, 0.8063655495643616]
    assert _draws(step_generator(3, 1, 2, 5, CPU))[:2] == [0.46715301275253296, 0.25365138053894043]
    assert pipeline_seed(3, 1, 2, 5) == 1480513579
    assert _draws(synthetic_generator(3, 2, 5, 1, CPU))[:2] == [0.12922734022140503, 0.40841591358184814]
    torch_draws, numpy_draw, python_draw, worker_draws = _global_draws(seed_step_streams(3, 1, 2, 5))
    assert torch_draws == [0.3358573317527771, 0.15627610683441162]
    assert (numpy_draw, python_draw) == (0.17794634575178192, 0.8421466991263215)
    assert worker_draws[:2] == [0.29160618782043457, 0.49145591259002686]


def test_step_random_state_round_trips_in_its_checkpoint_layout():
    r = StepRandom.create(3, 0, CPU)
    _step_random_draws(r)
    state = r.state_dict()
    assert set(state) == {"shared", "local", "shared_device"} and state["shared"]["bit_generator"] == "PCG64"
    again = StepRandom.create(0, 5, CPU)
    again.load_state_dict(state)
    assert _step_random_draws(again) == _step_random_draws(r)


def test_a_host_stream_refuses_a_foreign_state():
    with pytest.raises(ValueError, match="PCG64"):
        HostStream(0).load_state_dict({"bit_generator": "MT19937"})

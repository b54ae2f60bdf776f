"""The flow-matching scheduler beyond the examples of nbs/13_scheduler.ipynb (which nbdev_test runs). 13 already asserts
the golden inference and training tables, the loss weights' mean and zero, the Euler sampler reaching x0 with the exact
velocity, and the refusal of 0 steps; those are checked there only."""
import torch

from infcam.scheduler import FlowMatchScheduler


def test_training_sigmas_are_timesteps_over_1000():
    s, t = FlowMatchScheduler().training_table()
    torch.testing.assert_close(s * 1000, t)


def test_shift_formula():
    "The whole 4-step table, its next sigmas, and no shift (13 checks one level of the 20-step table)."
    sch = FlowMatchScheduler(shift=5.0)
    s, _ = sch.set_timesteps(4)
    base = torch.tensor([1.0, 0.75, 0.5, 0.25])
    torch.testing.assert_close(s, 5 * base / (1 + 4 * base))
    torch.testing.assert_close(sch.next_sigmas(s), torch.cat([s[1:], torch.zeros(1)]))
    s1, _ = FlowMatchScheduler(shift=1.0).set_timesteps(4)
    torch.testing.assert_close(s1, base)


def test_step_and_add_noise_per_sample_sigma():
    sch = FlowMatchScheduler()
    x0, noise, v = torch.zeros(2, 3, 1, 1, 1), torch.ones(2, 3, 1, 1, 1), torch.full((2, 3, 1, 1, 1), 2.0)
    sig = torch.tensor([0.25, 0.75])
    xt = sch.add_noise(x0, noise, sig)
    assert torch.equal(xt[:, 0].flatten(), sig)
    out = sch.step(v, sig, torch.tensor([0.0, 0.5]), xt)
    torch.testing.assert_close(out[:, 0].flatten(), sig + 2 * torch.tensor([-0.25, -0.25]))


def test_sample_training_is_reproducible_and_spread():
    "(13 checks that the draws index the training tables.)"
    sch = FlowMatchScheduler()
    idx, *_ = sch.sample_training(64, torch.Generator().manual_seed(0))
    assert idx.min() >= 0 and idx.max() < 1000
    idx2, *_ = sch.sample_training(64, torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx2)  # reproducible with a seeded generator
    assert len(set(idx.tolist())) > 40  # and spread out

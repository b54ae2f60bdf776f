import json
from pathlib import Path

import pytest
import torch

from infcam.core import InfcamError
from infcam.scheduler import FlowMatchScheduler

GOLDEN = Path(__file__).parent / "data" / "golden" / "scheduler.json"


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


def test_inference_golden(golden):
    s, t = FlowMatchScheduler(1000, 5.0).set_timesteps(20)
    g = golden["inference_steps20_shift5"]
    assert s.dtype == torch.float32 and s.shape == (20,)
    torch.testing.assert_close(s, torch.tensor(g["sigmas"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(t, torch.tensor(g["timesteps"]), atol=1e-4, rtol=0)


def test_training_golden(golden):
    sch = FlowMatchScheduler()
    s, t = sch.training_table()
    g = golden["training_1000"]
    assert s.shape == t.shape == (1000,)
    torch.testing.assert_close(t, torch.tensor(g["timesteps"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(s * 1000, t)
    w = sch.loss_weights()
    torch.testing.assert_close(w, torch.tensor(g["weights"]), atol=1e-6, rtol=0)
    assert abs(w.mean().item() - 1) < 1e-5 and w.min().item() == 0.0


def test_shift_formula():
    sch = FlowMatchScheduler(shift=5.0)
    s, _ = sch.set_timesteps(4)
    base = torch.tensor([1.0, 0.75, 0.5, 0.25])
    torch.testing.assert_close(s, 5 * base / (1 + 4 * base))
    torch.testing.assert_close(sch.next_sigmas(s), torch.cat([s[1:], torch.zeros(1)]))
    s1, _ = FlowMatchScheduler(shift=1.0).set_timesteps(4)
    torch.testing.assert_close(s1, base)


def test_euler_exact_velocity_reaches_x0():
    sch = FlowMatchScheduler()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 4, 3, 2, 2, generator=g), torch.randn(2, 4, 3, 2, 2, generator=g)
    s, _ = sch.set_timesteps(7)
    x = noise.clone()
    for a, b in zip(s, sch.next_sigmas(s)):
        x = sch.step(sch.velocity_target(x0, noise), a, b, x)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


def test_step_and_add_noise_per_sample_sigma():
    sch = FlowMatchScheduler()
    x0, noise, v = torch.zeros(2, 3, 1, 1, 1), torch.ones(2, 3, 1, 1, 1), torch.full((2, 3, 1, 1, 1), 2.0)
    sig = torch.tensor([0.25, 0.75])
    xt = sch.add_noise(x0, noise, sig)
    assert torch.equal(xt[:, 0].flatten(), sig)
    out = sch.step(v, sig, torch.tensor([0.0, 0.5]), xt)
    torch.testing.assert_close(out[:, 0].flatten(), sig + 2 * torch.tensor([-0.25, -0.25]))


def test_sample_training():
    sch = FlowMatchScheduler()
    idx, s, t, w = sch.sample_training(64, torch.Generator().manual_seed(0))
    S, T = sch.training_table()
    W = sch.loss_weights()
    assert idx.dtype == torch.int64 and idx.min() >= 0 and idx.max() < 1000
    assert torch.equal(s, S[idx]) and torch.equal(t, T[idx]) and torch.equal(w, W[idx])
    idx2, *_ = sch.sample_training(64, torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx2)  # reproducible with a seeded generator
    assert len(set(idx.tolist())) > 40  # and spread out


def test_bad_steps():
    with pytest.raises(InfcamError, match="positive integer"):
        FlowMatchScheduler().set_timesteps(0)

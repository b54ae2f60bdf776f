"""Tests for infcam.render beyond the examples of nbs/02_render.ipynb (which nbdev_test runs): exact ray geometry,
broadcasting, batching, depth of planes and boxes, texture orientation, errors. 02 already asserts the rotation axes and
order, the map's range and determinism, full turns and the seam, the wall/card depths, the empty scene and a moving
card; those are checked there only."""
import numpy as np
import pytest
import torch
from infcam.core import InfcamError
from infcam.render import (rotation_matrix, c2w_matrix, make_env_map, render_env, render_view, Scene, billboard, box,
                           ground_plane, make_texture, demo_scene, LinearMotion, CircularMotion)

ENV = make_env_map(64, 128, seed=0)


def test_rotation_order_matters():
    "(02 checks the axes and that the order is yaw, pitch, roll.) The reverse order is a different rotation."
    y, p, r = 25., -10., 40.
    assert not torch.allclose(rotation_matrix(y, p, r), rotation_matrix(0., 0., r) @ rotation_matrix(0., p) @ rotation_matrix(y), atol=1e-3)


def test_rotation_batched_orthonormal():
    R = rotation_matrix(torch.linspace(-180, 180, 7)[:, None], torch.linspace(-80, 80, 5), 30.)
    assert R.shape == (7, 5, 3, 3) and R.dtype == torch.float32
    torch.testing.assert_close(R @ R.mT, torch.eye(3).expand_as(R), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(7, 5), atol=1e-5, rtol=0)


def test_c2w_broadcasts_one_centre():
    M = c2w_matrix(rotation_matrix(torch.tensor([0., 90.])), torch.tensor([1., 2., 3.]))
    assert M.shape == (2, 4, 4)
    torch.testing.assert_close(M[:, :3, 3], torch.tensor([[1., 2, 3], [1, 2, 3]]))
    torch.testing.assert_close(M[:, 3], torch.tensor([[0., 0, 0, 1], [0, 0, 0, 1]]))


def test_env_map_wraps_and_checks_its_size():
    "(02 checks shape, range, contrast and determinism per seed.)"
    e = ENV
    # wraps seamlessly: the first and last columns are neighbours
    assert (e[..., 0] - e[..., -1]).abs().mean() < 3 * (e[..., 1:] - e[..., :-1]).abs().mean()
    with pytest.raises(InfcamError): make_env_map(64, 100)


def _ramp_env(He=90, We=180):
    "Channel 0: longitude in [0, 1] across the map, channel 1: latitude in [0, 1] down the map, channel 2: 0.5."
    u = (torch.arange(We) + 0.5) / We
    v = (torch.arange(He) + 0.5) / He
    return torch.stack([u.expand(He, We), v[:, None].expand(He, We), torch.full((He, We), 0.5)])


def test_render_env_matches_ray_geometry():
    "Each pixel centre's ray (computed independently in float64) looks up the right longitude and latitude."
    env = _ramp_env()
    H, W = 24, 40
    K4 = torch.tensor([30., 28., 20., 12.])
    R = rotation_matrix(20., -15., 10.)
    img = render_env(env, K4, R, H, W)[0]
    j, i = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing='ij')
    d = np.stack([(i - 20) / 30, (j - 12) / 28, np.ones_like(i)], -1) @ R.double().numpy().T
    lon = np.arctan2(d[..., 0], d[..., 2]); lat = np.arctan2(-d[..., 1], np.hypot(d[..., 0], d[..., 2]))
    np.testing.assert_allclose(img[0].numpy(), lon / (2 * np.pi) + 0.5, atol=2e-4)
    np.testing.assert_allclose(img[1].numpy(), 0.5 - lat / np.pi, atol=2e-4)


def test_render_env_batching():
    "One call with N cameras equals N calls (02 checks full turns and the seam)."
    Rs = rotation_matrix(torch.tensor([0., 30., -50.]), torch.tensor([0., 10., 5.]))
    Ks = torch.tensor([[32., 32, 32, 32], [40, 40, 32, 32], [20, 25, 32, 32]])
    batch = render_env(ENV, Ks, Rs, 64, 64)
    for n in range(3):
        torch.testing.assert_close(batch[n:n + 1], render_env(ENV, Ks[n], Rs[n], 64, 64))


def test_supersampling_constant_env():
    env = torch.full((3, 16, 32), 0.25)
    img = render_env(env, torch.tensor([20., 20., 16., 12.]), torch.eye(3), 24, 32, ss=3)
    assert img.shape == (1, 3, 24, 32)
    torch.testing.assert_close(img, torch.full_like(img, 0.25))


def test_render_view_depth_follows_the_camera():
    "Moving the camera back by 1 m adds 1 m to every depth (02 checks the wall's depth and the card's occlusion)."
    K = torch.tensor([32., 32., 32., 24.])
    wall = billboard((0, 0, 2), (10, 10), make_texture('checker', 1))
    _, dep2 = render_view(Scene(ENV, [wall]), K, c2w_matrix(torch.eye(3), torch.tensor([0., 0, -1])), 48, 64)
    torch.testing.assert_close(dep2, torch.full_like(dep2, 3.))


def test_render_view_ground_plane_depth():
    "A horizontal plane 1.5 m below the camera: the pixel row at v has depth 1.5 fy / (v - cy)."
    g = ground_plane(1.5, 200., tile=2.)
    K = torch.tensor([50., 50., 40., 30.])
    _, dep = render_view(Scene(ENV, [g]), K, torch.eye(4), 60, 80)
    rows = torch.arange(31, 60)
    torch.testing.assert_close(dep[0, 0, 31:, 40], 1.5 * 50 / (rows + 0.5 - 30), rtol=1e-5, atol=1e-5)
    assert dep[0, 0, :30].isinf().all()


def test_texture_orientation():
    "Texture x runs to the camera's right and texture y downwards for a billboard facing the camera."
    tex = torch.zeros(3, 8, 8); tex[0, :, :4] = 1; tex[2, :4] = 1     # red left half, blue top half
    img, _ = render_view(Scene(ENV, [billboard((0, 0, 2), (2, 2), tex)]), torch.tensor([40., 40., 40., 40.]), torch.eye(4), 80, 80)
    assert img[0, 0, 40, 25] > 0.9 and img[0, 0, 40, 55] < 0.1
    assert img[0, 2, 25, 40] > 0.9 and img[0, 2, 55, 40] < 0.1


def test_moving_objects_and_per_view_times():
    "A time per view in one call, as one call per view (02 moves the card with one time per call); a circular motion."
    K = torch.tensor([32., 32., 32., 24.])
    mover = Scene(ENV, [billboard((0, 0, 3), (0.5, 0.5), torch.ones(3, 8, 8), motion=LinearMotion((1., 0, 0)))])
    _, dep = render_view(mover, K, torch.eye(4).expand(2, 4, 4), 48, 64, t=torch.tensor([0., 1.]))
    cols = [d[0].isfinite().nonzero()[:, 1].float().mean() for d in dep]
    assert abs((cols[1] - cols[0]).item() - 32 / 3) < 0.6
    _, d0 = render_view(mover, K, torch.eye(4), 48, 64, t=0.)
    torch.testing.assert_close(d0[0], dep[0])
    torch.testing.assert_close(CircularMotion(1., 4.)(1.), torch.tensor([1., 0., -1.]), atol=1e-6, rtol=0)


def test_box_faces_and_supersampled_depth():
    b = box((0, 0, 3), (1, 1, 1), make_texture('bricks', 0))
    assert len(b) == 6
    for q in b: torch.testing.assert_close(q.axes.T @ q.axes, torch.eye(3), atol=1e-6, rtol=0)
    K = torch.tensor([40., 40., 32., 32.])
    _, dep = render_view(Scene(ENV, b), K, torch.eye(4), 64, 64)
    assert abs(dep[0, 0, 32, 32].item() - 2.5) < 1e-5          # the front face is at z = 2.5
    _, dep2 = render_view(Scene(ENV, b), K, torch.eye(4), 64, 64, ss=2)
    assert dep2.shape == (1, 1, 64, 64) and abs(dep2[0, 0, 32, 32].item() - 2.5) < 1e-5


def test_bad_inputs():
    with pytest.raises(InfcamError): render_env(ENV, torch.ones(3), torch.eye(3), 8, 8)
    with pytest.raises(InfcamError): render_view(Scene(ENV, []), torch.ones(4), torch.eye(3), 8, 8)
    with pytest.raises(InfcamError): render_env(ENV, torch.ones(2, 4), torch.eye(3).expand(3, 3, 3), 8, 8)
    with pytest.raises(InfcamError): make_texture('plaid')


def test_demo_scene_deterministic_in_every_quad():
    "Every quad's centre and texture, not only one centre (02 checks one quad, another seed, and what is visible)."
    s = demo_scene(0, env_size=(32, 64))
    s2 = demo_scene(0, env_size=(32, 64))
    assert len(s.quads) == len(s2.quads) > 20
    assert all(torch.equal(a.center, b.center) and torch.equal(a.texture, b.texture) for a, b in zip(s.quads, s2.quads))


"Tests for infcam.homography: the infinite homography, image and latent warps, the released convention."
import math
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from infcam.core import InfcamError
from infcam.homography import (intrinsics_matrix, intrinsics_inverse, infinite_homography, inverse_infinite_homography,
                               inverse_3x3, apply_homography, pixel_coords, homography_grid, sample_locations, warp_image,
                               latent_intrinsics, latent_homographies, warp_latents, convention_shift)
from infcam.render import make_env_map, render_env, render_view, demo_scene, rotation_matrix, fov_intrinsics, c2w_matrix

GOLDEN = Path(__file__).parent / 'data' / 'golden' / 'warp.safetensors'


def _close(a, b, eps):
    torch.testing.assert_close(a, b, atol=eps, rtol=0)


def psnr(a, b, m):
    mse = ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[1])
    return (10 * torch.log10(1 / mse)).item()


# ---------------------------------------------------------------- the latent warp the model uses

@pytest.fixture(scope='module')
def golden():
    return load_file(GOLDEN)


def test_golden_released(golden):
    g = golden
    out = warp_latents(g['input.latent_bfhwd'], g['input.K_src_normalized'], g['input.K_tgt_normalized'],
                       g['input.extrinsics'], 'released')
    assert out.dtype == torch.float32 and out.shape == g['output.warped_bfhwd'].shape
    err = (out - g['output.warped_bfhwd']).abs()
    assert err.max() < 5e-5 and err.mean() < 2e-6, f"max {err.max():.2e}, mean {err.mean():.2e}"
    # the default is the released convention, and 'exact' is measurably different
    torch.testing.assert_close(warp_latents(g['input.latent_bfhwd'], g['input.K_src_normalized'], g['input.K_tgt_normalized'],
                                            g['input.extrinsics']), out)
    exact = warp_latents(g['input.latent_bfhwd'], g['input.K_src_normalized'], g['input.K_tgt_normalized'],
                         g['input.extrinsics'], 'exact')
    assert (exact - out).abs().mean() > 0.05


def _identity_extrinsics(B, Fr):
    return torch.eye(3, 4).reshape(1, 1, 12).expand(B, Fr, 12)


def test_exact_identity_latent_warp():
    x = torch.randn(2, 3, 7, 9, 5)
    K = torch.tensor([[0.9, 0.9, 0.5, 7 / 18], [1.2, 1.2, 0.5, 7 / 18]])
    out = warp_latents(x, K, K, _identity_extrinsics(2, 3), 'exact')
    _close(out, x, 1e-5)
    # the released convention is not the identity (it zooms out by (w - 1) / w about the centre)
    rel = warp_latents(x, K, K, _identity_extrinsics(2, 3), 'released')
    assert (rel - x).abs().max() > 0.1
    _close(rel[:, :, 3, 4], x[:, :, 3, 4], 1e-5)               # ... except at the centre pixel of an odd grid


def test_latent_warp_batching_shapes_dtypes():
    torch.manual_seed(0)
    B, Fr, h, w, d = 2, 4, 6, 11, 3
    x = torch.randn(B, Fr, h, w, d)
    K_s = torch.tensor([[0.8, 0.8, 0.5, 3 / 11], [1.0, 1.0, 0.5, 3 / 11]])
    K_t = K_s * torch.tensor([1.3, 1.3, 1, 1])
    R = rotation_matrix(torch.randn(B, Fr) * 10, torch.randn(B, Fr) * 5, torch.randn(B, Fr) * 3)
    E = torch.cat([R, torch.randn(B, Fr, 3, 1)], -1).reshape(B, Fr, 12)
    for conv in ('released', 'exact'):
        out = warp_latents(x, K_s, K_t, E, conv)
        assert out.shape == x.shape
        for b in range(B):   # a batch is the same as its items; translation is ignored
            E0 = E[b:b + 1].clone(); E0.view(1, Fr, 3, 4)[..., 3] = 0
            _close(out[b:b + 1], warp_latents(x[b:b + 1], K_s[b:b + 1], K_t[b:b + 1], E0, conv), 1e-5)
        # frame i uses homography i: warping frame 2 alone with extrinsic 2 gives the same
        _close(out[:, 2:3], warp_latents(x[:, 2:3], K_s, K_t, E[:, 2:3], conv), 1e-5)
    bf = warp_latents(x.bfloat16(), K_s, K_t, E)
    assert bf.dtype == torch.bfloat16
    _close(bf.float(), warp_latents(x.bfloat16().float(), K_s, K_t, E).bfloat16().float(), 1e-2)


def test_latent_warp_differentiable():
    x = torch.randn(1, 2, 5, 8, 4, requires_grad=True)
    K = torch.tensor([[1., 1., 0.5, 5 / 16]], requires_grad=True)
    E = torch.cat([rotation_matrix(torch.tensor([5., -8.])), torch.zeros(2, 3, 1)], -1).reshape(1, 2, 12).requires_grad_()
    warp_latents(x, K, K * 1.1, E).square().sum().backward()
    assert x.grad.abs().sum() > 0 and E.grad[..., :3].abs().sum() > 0 and K.grad.abs().sum() > 0
    assert E.grad.view(1, 2, 3, 4)[..., 3].abs().sum() == 0       # the translation column does not enter


def test_latent_intrinsics_and_homographies():
    K = torch.tensor([[0.8, 0.7, 0.5, 0.3125]])
    for conv in ('released', 'exact'):
        M = latent_intrinsics(K, 10, 16, conv)
        _close(M[0], torch.tensor([[12.8, 0, 8], [0, 11.2, 5], [0, 0, 1]]), 1e-5)
    # 'exact' follows an off-centre principal point, 'released' always uses the grid centre
    Koff = torch.tensor([[0.8, 0.8, 0.45, 0.3]])
    _close(latent_intrinsics(Koff, 10, 16, 'exact')[0, :2, 2], torch.tensor([7.2, 4.8]), 1e-5)
    _close(latent_intrinsics(Koff, 10, 16, 'released')[0, :2, 2], torch.tensor([8., 5.]), 1e-5)
    E = torch.cat([rotation_matrix(torch.tensor([[3., 6., 9.]])), torch.ones(1, 3, 3, 1)], -1).reshape(1, 3, 12)
    Hs = latent_homographies(K, K * 1.2, E, 10, 16)
    assert Hs.shape == (1, 3, 3, 3)
    Kl = latent_intrinsics(K, 10, 16)
    _close(Hs[0, 1], infinite_homography(Kl[0], latent_intrinsics(K * 1.2, 10, 16)[0], rotation_matrix(6.)), 1e-4)


def test_exact_latent_warp_is_warp_image():
    torch.manual_seed(1)
    img = torch.rand(1, 3, 10, 16)
    K_s, K_t = torch.tensor([[0.8, 0.8, 0.5, 0.3125]]), torch.tensor([[1.1, 1.1, 0.5, 0.3125]])
    E = torch.cat([rotation_matrix(torch.tensor([[4., -7.]]), 3., 2.), torch.zeros(1, 2, 3, 1)], -1).reshape(1, 2, 12)
    lat = img.permute(0, 2, 3, 1)[:, None].expand(1, 2, 10, 16, 3)
    out = warp_latents(lat, K_s, K_t, E, 'exact')
    Hs = latent_homographies(K_s, K_t, E, 10, 16, 'exact')
    for i in range(2):
        _close(out[0, i].permute(2, 0, 1), warp_image(img, Hs[0, i])[0], 1e-5)


def test_latent_errors():
    x = torch.zeros(1, 2, 4, 4, 3)
    K = torch.tensor([[1., 1., .5, .5]])
    with pytest.raises(InfcamError, match='convention'): warp_latents(x, K, K, _identity_extrinsics(1, 2), 'opencv')
    with pytest.raises(InfcamError, match='extrinsics'): warp_latents(x, K, K, torch.zeros(1, 2, 16))
    with pytest.raises(InfcamError, match='extrinsics'): warp_latents(x, K, K, _identity_extrinsics(1, 3))
    with pytest.raises(InfcamError, match='intrinsics'): warp_latents(x, torch.ones(1, 3), K, _identity_extrinsics(1, 2))
    with pytest.raises(InfcamError, match='latents'): warp_latents(x[0], K, K, _identity_extrinsics(1, 2))
    with pytest.raises(InfcamError, match='released'): warp_latents(torch.zeros(1, 1, 1, 4, 2), K, K, _identity_extrinsics(1, 1))


def test_convention_shift():
    s = convention_shift(torch.eye(3), 60, 104)
    assert s.shape == (60, 104)
    _close(s.max(), torch.tensor(0.5 * math.sqrt(2)), 1e-4)
    assert s.min() < 0.01
    # 'released' samples target pixel i at i * w / (w - 1); 'exact' at i + 0.5
    loc = sample_locations(torch.eye(3), 6, 10, 'released')
    _close(loc[0, :, 0], torch.arange(10.) * 10 / 9, 1e-5)
    _close(sample_locations(torch.eye(3), 6, 10, 'exact')[0, :, 0], torch.arange(10.) + 0.5, 1e-5)


# ---------------------------------------------------------------- the homography itself

def test_intrinsics_inverse():
    K = intrinsics_matrix(torch.tensor([[500., 400., 320., 240.], [90., 110., 31., 17.]]))
    _close(intrinsics_inverse(K) @ K, torch.eye(3).expand(2, 3, 3), 1e-6)
    with pytest.raises(InfcamError): intrinsics_matrix(torch.ones(2, 3))


def test_identity_and_zoom_matrices():
    K1 = intrinsics_matrix(torch.tensor([100., 100., 32., 24.]))
    K2 = intrinsics_matrix(torch.tensor([200., 200., 32., 24.]))
    _close(infinite_homography(K1, K1, torch.eye(3)), torch.eye(3), 1e-6)
    Hz = infinite_homography(K1, K2, torch.eye(3))
    _close(Hz, torch.tensor([[2., 0, -32], [0, 2, -24], [0, 0, 1]]), 1e-5)
    _close(inverse_infinite_homography(K1, K2, torch.eye(3)) @ Hz, torch.eye(3), 1e-6)
    pts = torch.tensor([[32., 24.], [0., 0.], [64., 48.], [40., 30.]])
    _close(apply_homography(Hz, pts), (pts - torch.tensor([32., 24.])) * 2 + torch.tensor([32., 24.]), 1e-4)


def test_pan_and_tilt_directions():
    "Panning right moves the picture left; tilting up moves it down (catches a sign or transpose error)."
    K = intrinsics_matrix(torch.tensor([100., 100., 64., 48.]))
    c = torch.tensor([[64., 48.]])
    for yaw in (10., -25.):
        _close(apply_homography(infinite_homography(K, K, rotation_matrix(yaw)), c),
               torch.tensor([[64 - 100 * math.tan(math.radians(yaw)), 48.]]), 1e-3)
    _close(apply_homography(infinite_homography(K, K, rotation_matrix(0., 10.)), c),
           torch.tensor([[64., 48 + 100 * math.tan(math.radians(10))]]), 1e-3)
    # a roll of the camera rotates the picture the other way: a point right of centre moves up
    p = apply_homography(infinite_homography(K, K, rotation_matrix(0., 0., 10.)), torch.tensor([[84., 48.]]))
    _close(p, torch.tensor([[64 + 20 * math.cos(math.radians(10)), 48 - 20 * math.sin(math.radians(10))]]), 1e-3)


def test_composition_order():
    "Camera 2 turned by R2 relative to camera 1 (turned by R1): H(K1->K2, R2) H(Ks->K1, R1) = H(Ks->K2, R1 R2)."
    R1, R2 = rotation_matrix(20., 5., 0.), rotation_matrix(0., -15., 10.)
    Ka, Kb, Kc = (intrinsics_matrix(torch.tensor([f, f, 100., 60.])) for f in (150., 200., 120.))
    two = infinite_homography(Kb, Kc, R2) @ infinite_homography(Ka, Kb, R1)
    once = infinite_homography(Ka, Kc, R1 @ R2)
    _close(two / two[2, 2], once / once[2, 2], 1e-4)
    wrong = infinite_homography(Ka, Kc, R2 @ R1)
    assert (wrong / wrong[2, 2] - once / once[2, 2]).abs().max() > 1
    # extra leading batch dimensions broadcast
    assert infinite_homography(Ka, Kc, rotation_matrix(torch.zeros(2, 5))).shape == (2, 5, 3, 3)
    with pytest.raises(InfcamError): infinite_homography(Ka, Kc, torch.eye(4))


def test_inverse_3x3():
    torch.manual_seed(0)
    M = torch.randn(5, 3, 3) + 2 * torch.eye(3)
    _close(inverse_3x3(M) @ M, torch.eye(3).expand(5, 3, 3), 1e-4)


# ---------------------------------------------------------------- warping images

def test_warp_image_identity_shift_mask():
    img = torch.rand(2, 3, 12, 20)
    _close(warp_image(img, torch.eye(3)), img, 1e-5)
    out, m = warp_image(img, torch.eye(3).expand(2, 3, 3), return_mask=True)
    assert m.shape == (2, 1, 12, 20) and m.min() == 1
    T = torch.tensor([[1., 0, 3], [0, 1, -2], [0, 0, 1]])
    out, m = warp_image(img, T, return_mask=True, padding_mode='zeros')
    _close(out[:, :, :-2, 3:], img[:, :, 2:, :-3], 1e-5)
    assert m[..., :3].sum() == 0 and m[..., -2:, :].sum() == 0 and m[:, :, :-2, 3:].min() == 1
    # border padding repeats the edge instead
    out_b = warp_image(img, T)
    _close(out_b[:, :, 0, :3], img[:, :, 2, :1].expand(2, 3, 3), 1e-5)
    with pytest.raises(InfcamError): warp_image(img[0], T)


def test_warp_image_zoom_is_centre_crop_upscaled():
    torch.manual_seed(2)
    img = torch.rand(1, 3, 24, 40)
    K1 = intrinsics_matrix(torch.tensor([30., 30., 20., 12.]))
    K2 = intrinsics_matrix(torch.tensor([60., 60., 20., 12.]))
    zoomed = warp_image(img, infinite_homography(K1, K2, torch.eye(3)))
    crop_up = F.interpolate(img[:, :, 6:18, 10:30], scale_factor=2, mode='bilinear', align_corners=False)
    _close(zoomed[..., 1:-1, 1:-1], crop_up[..., 1:-1, 1:-1], 1e-5)


def test_warp_image_points_behind_camera_are_masked():
    img = torch.rand(1, 3, 16, 16)
    K = intrinsics_matrix(torch.tensor([8., 8., 8., 8.]))
    _, m = warp_image(img, infinite_homography(K, K, rotation_matrix(150.)), return_mask=True)
    assert m.sum() == 0


@pytest.fixture(scope='module')
def env():
    return make_env_map(256, 512, seed=3)


def test_rendered_rotation_and_zoom(env):
    "Warp a render of the sky by H and compare it with a render from the turned, zoomed target camera."
    H, W = 60, 100
    Ks4, Kt4 = fov_intrinsics(H, W, 75.), fov_intrinsics(H, W, 60.)
    Ks, Kt = intrinsics_matrix(Ks4), intrinsics_matrix(Kt4)
    src = render_env(env, Ks4, torch.eye(3), H, W, ss=2)
    for ypr in [(12., -6., 4.), (-20., 10., -15.)]:
        R = rotation_matrix(*ypr)
        tgt = render_env(env, Kt4, R, H, W, ss=2)
        w, m = warp_image(src, infinite_homography(Ks, Kt, R), return_mask=True)
        good = psnr(w, tgt, m)
        assert good > 33, f"{ypr}: {good:.1f} dB"
        y, p, r = ypr
        for name, Hw in {'transposed': infinite_homography(Ks, Kt, R.mT),
                         'yaw sign': infinite_homography(Ks, Kt, rotation_matrix(-y, p, r)),
                         'pitch sign': infinite_homography(Ks, Kt, rotation_matrix(y, -p, r)),
                         'roll sign': infinite_homography(Ks, Kt, rotation_matrix(y, p, -r)),
                         'lenses swapped': infinite_homography(Kt, Ks, R)}.items():
            w, m = warp_image(src, Hw, return_mask=True)
            assert psnr(w, tgt, m) < good - 10, f"{ypr} {name}: {psnr(w, tgt, m):.1f} dB vs {good:.1f}"
        # half a pixel off costs several dB: the pixel-centre convention is checked too
        half = torch.tensor([[1., 0, 0.5], [0, 1, 0.5], [0, 0, 1]]) @ infinite_homography(Ks, Kt, R)
        w, m = warp_image(src, half, return_mask=True)
        assert psnr(w, tgt, m) < good - 3


def test_rotation_only_scene_has_no_parallax_translation_does():
    "With depth in the scene: a turning camera is explained by H at every depth; a moving one is not near objects."
    scene = demo_scene(0, env_size=(128, 256))
    H, W = 60, 100
    K4 = fov_intrinsics(H, W, 70.)
    K = intrinsics_matrix(K4)
    R = rotation_matrix(10., 3., 0.)
    Hm = infinite_homography(K, K, R)
    src, dsrc = render_view(scene, K4, torch.eye(4), H, W, ss=2)
    tgt, _ = render_view(scene, K4, c2w_matrix(R), H, W, ss=2)
    w, m = warp_image(src, Hm, return_mask=True)
    rot_only = psnr(w, tgt, m)
    tgt_t, dtgt = render_view(scene, K4, c2w_matrix(R, torch.tensor([0.5, 0., 0.3])), H, W, ss=2)
    moved = psnr(w, tgt_t, m)
    assert rot_only > 27 and moved < rot_only - 6, (rot_only, moved)
    resid = ((w - tgt_t).abs() * m).mean(1, keepdim=True)
    far = dtgt.isinf() & (m > 0) & (F.max_pool2d(dtgt.isfinite().float(), 9, 1, 4) == 0)
    near = (dtgt < 6) & (m > 0)
    assert resid[near].mean() > 5 * resid[far].mean()

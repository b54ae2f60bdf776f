"""infcam.metrics beyond the examples of nbs/50_metrics.ipynb (which nbdev_test runs): pose estimation on four presets
and the 'chain' method, hand-computed metric values, SSIM against a float64 reference, COLMAP and plain pose files,
missing weights. 50 already asserts a 30 degree geodesic, scale alignment of a scaled arc, 20 dB PSNR, SSIM(x, x) = 1,
the Frechet distance of a shifted set and two missing-weights messages; those are checked there only."""
import json, math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from infcam.core import InfcamError
from infcam.cameras import preset, ypr_to_rotation, pose_matrix
from infcam.metrics import (estimate_poses, align_scale, rot_err, trans_err, camera_metrics, geodesic_deg, psnr, ssim,
                            read_colmap_images, write_colmap_images, load_poses, lpips, fid, frechet_distance)
from infcam.fvd import fvd

NF = 17
# preset, its arguments, RotErr bound (deg), TransErr bound as a fraction of the trajectory's extent
CASES = {'arc_left': (dict(angle_deg=15), 1.0, 0.08), 'translate_up': ({}, 2.5, 0.15), 'pan_left': (dict(angle_deg=10), 0.3, 0.),
         'arc_right': (dict(angle_deg=25), 2.5, 0.08)}

@pytest.fixture(scope='module')
def clips():
    "One static synthetic scene seen by four stretched presets starting at the identity: 17 frames at 128x224, 2x SS."
    from infcam.synthetic import SceneSpec, make_scene, render_cameras, base_pose
    spec = SceneSpec(seed=5, num_frames=NF, height=128, width=224, num_moving=0, ss=2)
    c2w = torch.stack([base_pose(spec) @ preset(k, NF, full=True, ref_frame=0, stretch=True, **kw)
                       for k, (kw, _, _) in CASES.items()])
    frames = render_cameras(make_scene(spec), c2w, spec.intrinsics, spec.height, spec.width, ss=spec.ss)
    return {k: (frames[i], c2w[i]) for i, k in enumerate(CASES)}, spec.intrinsics

@pytest.mark.parametrize('name', ['arc_left', 'translate_up', 'pan_left'])
def test_estimate_poses_recovers_presets(clips, name):
    (frames, c2w), K4 = clips[0][name], clips[1]
    _, rot_tol, trans_tol = CASES[name]
    est, reg, diag = estimate_poses(frames, K4)
    assert est.shape == (NF, 4, 4) and est.dtype == torch.float32 and reg.all()
    torch.testing.assert_close(est[0], torch.eye(4))
    m = camera_metrics(est, c2w, reg)
    extent = float((c2w[:, :3, 3] - c2w[0, :3, 3]).norm(dim=-1).max())
    print(name, m, extent)
    assert m['registered'] == 1.0
    assert m['RotErr'] < rot_tol
    assert m['TransErr'] <= trans_tol * extent + 1e-6
    if name == 'pan_left': assert diag['segments'][0]['kind'] == 'rotation'

def test_chain_registers_what_reference_loses(clips):
    "A fast 25-degree arc (3 degrees a frame): the tracks of frame 0 die; 'reference' stops there, 'chain' carries the scale across segments."
    (frames, c2w), K4 = clips[0]['arc_right'], clips[1]
    est_r, reg_r, _ = estimate_poses(frames, K4, method='reference')
    est_c, reg_c, diag = estimate_poses(frames, K4, method='chain')
    assert reg_r.float().mean() < 0.5 and reg_c.all()
    assert any(s['kind'] == 'carried' for s in diag['segments'])
    m_r, m_c = camera_metrics(est_r, c2w, reg_r), camera_metrics(est_c, c2w, reg_c)
    extent = float((c2w[:, :3, 3] - c2w[0, :3, 3]).norm(dim=-1).max())
    print('reference', m_r, 'chain', m_c, extent)
    assert m_r['RotErr'] < 1.0 and m_c['RotErr'] < CASES['arc_right'][1]
    assert m_c['TransErr'] < CASES['arc_right'][2] * extent

def test_estimate_poses_errors():
    with pytest.raises(InfcamError, match='method'): estimate_poses(torch.rand(3, 3, 32, 32), torch.ones(4), method='x')
    with pytest.raises(InfcamError, match='video'): estimate_poses(torch.rand(3, 32, 32), torch.ones(4))
    with pytest.raises(InfcamError, match='K4'): estimate_poses(torch.rand(3, 3, 32, 32), torch.ones(3))

def test_geodesic_and_rot_err():
    R = ypr_to_rotation(torch.tensor([0., 30., 0.]), torch.tensor([0., 0., 90.]), torch.tensor([0., 0., 0.]))
    torch.testing.assert_close(geodesic_deg(torch.eye(3).expand(3, 3, 3), R), torch.tensor([0., 30., 90.]), atol=1e-3, rtol=0)
    a = pose_matrix(torch.eye(3).expand(2, 3, 3))
    b = pose_matrix(torch.stack([torch.eye(3), ypr_to_rotation(torch.tensor(20.))]))
    assert abs(rot_err(a, b) - 10.) < 1e-3                               # mean of 0 and 20 degrees
    assert rot_err(b, b) < 1e-3                                           # accurate near 0 (atan2, not acos)

def test_align_scale_and_trans_err_by_hand():
    "(50 checks that a scaled arc is aligned back with zero error.)"
    # hand-computed: adjacent steps of 1 (ref) and 2, 2, 4 (est) -> median ratio 0.5; est*0.5 = 0, 1, 2, 4
    t_ref = torch.tensor([[0., 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    t_est = torch.tensor([[0., 0, 0], [2, 0, 0], [4, 0, 0], [8, 0, 0]])
    r, e = pose_matrix(torch.eye(3).expand(4, 3, 3), t_ref), pose_matrix(torch.eye(3).expand(4, 3, 3), t_est)
    assert abs(align_scale(e, r)[1] - 0.5) < 1e-6
    assert abs(trans_err(e, r) - 0.25) < 1e-6                              # |4 - 3| / 4 frames
    assert abs(trans_err(e, r, align=False) - (0 + 1 + 2 + 5) / 4) < 1e-6

def test_camera_metrics_relative_and_mask():
    ref = preset('translate_up', 9, full=True)
    world = pose_matrix(ypr_to_rotation(torch.tensor(40.), torch.tensor(10.)), torch.tensor([1., 2., 3.]))
    est = ref.clone(); est[:, :3, 3] *= 3
    m = camera_metrics(est, world @ ref)                                   # ref in another world frame
    assert m['RotErr'] < 1e-2 and m['TransErr'] < 1e-5 and m['registered'] == 1.
    reg = torch.ones(9, dtype=torch.bool); reg[5:] = False
    est[5:] = torch.eye(4)                                                 # unregistered frames are ignored
    m = camera_metrics(est, ref, reg)
    assert abs(m['registered'] - 5 / 9) < 1e-6 and m['TransErr'] < 1e-5
    with pytest.raises(InfcamError, match='frame 0'): camera_metrics(est, ref, ~reg)
    with pytest.raises(InfcamError, match='poses'): camera_metrics(est[:3], ref)

def test_psnr_known_mse():
    a = torch.zeros(2, 3, 8, 8); b = a.clone(); b[0] += 0.1; b[1] += 0.01   # MSE 1e-2 and 1e-4
    torch.testing.assert_close(psnr(a, b, per_frame=True), torch.tensor([20., 40.]))
    assert abs(psnr(a, b) - 30.) < 1e-4

def _ssim_reference(a:np.ndarray, b:np.ndarray) -> float:
    "Float64 SSIM with an explicit 11x11 Gaussian window, sliding loops over valid positions, per channel."
    x = np.arange(11) - 5.
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2)); w = np.outer(g, g); w /= w.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for f in range(a.shape[0]):
        maps = []
        for c in range(a.shape[1]):
            A, B = a[f, c], b[f, c]
            H, W = A.shape
            m = np.empty((H - 10, W - 10))
            for i in range(H - 10):
                for j in range(W - 10):
                    pa, pb = A[i:i + 11, j:j + 11], B[i:i + 11, j:j + 11]
                    ma, mb = (w * pa).sum(), (w * pb).sum()
                    va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
                    cov = (w * (pa - ma) * (pb - mb)).sum()
                    m[i, j] = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
            maps.append(m.mean())
        vals.append(np.mean(maps))
    return float(np.mean(vals))

def test_ssim_against_reference():
    g = torch.Generator().manual_seed(0)
    a = F.avg_pool2d(torch.rand(2, 3, 26, 30, generator=g), 3, 1, 1)        # some structure
    b = (a + 0.08 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ref = _ssim_reference(a.double().numpy(), b.double().numpy())
    assert 0.2 < ref < 0.95
    assert abs(ssim(a, b) - ref) < 1e-4
    with pytest.raises(InfcamError, match='shape'): ssim(a, b[:, :, :20])

def _write_colmap_by_hand(path, recs):
    lines = ['# Image list with two lines of data per image:', '#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME',
             '# Number of images: 2']
    for i, (q, t, name, pts) in enumerate(recs):
        lines += [f"{i + 1} {' '.join(map(str, q))} {' '.join(map(str, t))} 1 {name}", pts]
    path.write_text('\n'.join(lines) + '\n')

def test_read_colmap_by_hand(tmp_path):
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    # written out of name order; the first has no 2D points (an empty line), the second some
    _write_colmap_by_hand(tmp_path / 'images.txt', [((c, 0, 0, s), (1, 2, 3), 'b.png', ''),
                                                    ((1, 0, 0, 0), (0, 0, -2), 'a.png', '10.5 20.5 -1 11 12 3')])
    c2w, names = read_colmap_images(tmp_path / 'images.txt')
    assert names == ['a.png', 'b.png']
    torch.testing.assert_close(c2w[0], pose_matrix(torch.eye(3), torch.tensor([0., 0., 2.])))
    Rz = torch.tensor([[0., -1, 0], [1, 0, 0], [0, 0, 1]])                 # w2c: 90 degrees about z
    want = torch.eye(4); want[:3, :3] = Rz.T; want[:3, 3] = -Rz.T @ torch.tensor([1., 2., 3.])
    torch.testing.assert_close(c2w[1], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_poses(tmp_path / 'images.txt'), c2w)

def test_colmap_round_trip(tmp_path):
    c2w = pose_matrix(ypr_to_rotation(torch.linspace(-170, 170, 7), torch.linspace(-80, 80, 7), torch.linspace(0, 179, 7)),
                      torch.randn(7, 3, generator=torch.Generator().manual_seed(1)))
    p = write_colmap_images(tmp_path / 'images.txt', c2w)
    back, names = read_colmap_images(p)
    assert names == [f"{i:05d}.png" for i in range(7)]
    torch.testing.assert_close(back, c2w, atol=1e-5, rtol=0)
    with pytest.raises(InfcamError, match='exists'): write_colmap_images(p, c2w, overwrite=False)

def test_load_plain_pose_files(tmp_path):
    c2w = preset('arc_right', 5, full=True)
    np.save(tmp_path / 'p.npy', c2w.numpy())
    np.savetxt(tmp_path / 'p12.txt', c2w[:, :3].reshape(5, 12).numpy())
    np.savetxt(tmp_path / 'p16.txt', c2w.reshape(5, 16).numpy())
    (tmp_path / 'l.json').write_text(json.dumps(c2w.tolist()))
    (tmp_path / 'd.json').write_text(json.dumps({'c2w': c2w[:, :3].reshape(5, 12).tolist()}))
    for n in ('p.npy', 'p12.txt', 'p16.txt', 'l.json', 'd.json'):
        torch.testing.assert_close(load_poses(tmp_path / n), c2w, atol=1e-6, rtol=0)
    (tmp_path / 'bad.json').write_text(json.dumps({'x': 1}))
    (tmp_path / 'bad.txt').write_text('1 2 3\n4 5 6\n')
    with pytest.raises(InfcamError, match="'c2w' or 'poses'"): load_poses(tmp_path / 'bad.json')
    with pytest.raises(InfcamError, match='bad.txt'): load_poses(tmp_path / 'bad.txt')
    with pytest.raises(InfcamError, match='does not exist'): load_poses(tmp_path / 'none.npy')
    with pytest.raises(InfcamError, match='unknown pose file'): (tmp_path / 'x.csv').write_text('1'); load_poses(tmp_path / 'x.csv')

def test_frechet_distance_with_scaled_covariance():
    "(50 checks identical sets and a pure shift.)"
    g = torch.Generator().manual_seed(0)
    fa = torch.randn(400, 3, generator=g)
    fb = fa * 2 + 1                                                        # mean shift 1 per dim, covariance x4
    Sa = np.cov(fa.double().numpy().T)
    d = fa.double().mean(0).numpy() + 1                                    # mean(fb) - mean(fa)
    want = (d ** 2).sum() + np.trace(Sa) + np.trace(4 * Sa) - 2 * np.trace(2 * Sa)  # sqrt(Sa 4Sa) = 2Sa
    assert abs(frechet_distance(fa, fb) - want) < 1e-6

def test_frechet_distance_against_scipy_sqrtm():
    "Random covariances that do not commute: the closed form with scipy's general matrix square root."
    from scipy.linalg import sqrtm
    g = torch.Generator().manual_seed(3)
    fa = torch.randn(300, 6, generator=g) @ torch.randn(6, 6, generator=g) + 1
    fb = torch.randn(200, 6, generator=g) @ torch.randn(6, 6, generator=g)
    Sa, Sb = np.cov(fa.double().numpy().T), np.cov(fb.double().numpy().T)
    assert np.abs(Sa @ Sb - Sb @ Sa).max() > 1                              # they do not commute
    d = fa.double().mean(0).numpy() - fb.double().mean(0).numpy()
    want = d @ d + np.trace(Sa) + np.trace(Sb) - 2 * np.trace(sqrtm(Sa @ Sb).real)
    assert abs(frechet_distance(fa, fb) - want) < 1e-8 * abs(want)

def test_learned_metrics_need_local_weights(tmp_path):
    "(50 checks lpips without weights and fid with a missing file.)"
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(InfcamError, match='does not exist'): lpips(x, x, weights=tmp_path / 'alex.pth', backbone=tmp_path / 'a.pth')
    with pytest.raises(InfcamError, match='weights=PATH'): fid(x, x)
    clips = [torch.rand(9, 3, 16, 16)] * 2
    with pytest.raises(InfcamError, match='weights=PATH'): fvd(clips, clips)
    with pytest.raises(InfcamError, match='does not exist'): fvd(clips, clips, weights=tmp_path / 'i3d_pretrained_400.pt')

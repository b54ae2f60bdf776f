"""Cameras beyond the examples of nbs/01_cameras.ipynb (which nbdev_test runs): error messages, every preset and spelling,
the reference file, edge cases. 01 already asserts the golden presets' values, the round trips, the numeric frame order
of camera files, and the lens examples; those are checked there only."""
import json, math
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from infcam.core import InfcamError
from infcam.cameras import *
from infcam.cameras import preset_id

GOLDEN = Path(__file__).parent / 'data' / 'golden' / 'presets_extrinsics.safetensors'
SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'sample_data'
TEN_TYPES = SHARED / 'cameras' / 'camera_extrinsics_10types.json'

def random_poses(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))[0]
    Q = Q * torch.linalg.det(Q)[:, None, None]
    return pose_matrix(Q, 3 * torch.randn(n, 3, generator=g, dtype=torch.float64)).float()

# ---- golden conformance -------------------------------------------------------------------------------------------
GOLD = load_file(GOLDEN)

def test_golden_has_all_twenty_entries():
    assert sorted(GOLD) == sorted(f'frames{n}.cam{i:02d}' for n in (81, 41) for i in range(1, 11))

@pytest.mark.parametrize('key', sorted(GOLD))
def test_presets_golden_shapes_and_spellings(key):
    "(01 asserts the values of all twenty entries against the golden file.)"
    n, cam = int(key[6:8]), int(key[-2:])
    ref = GOLD[key]
    ext = to_extrinsics(preset(cam, n))
    assert ext.shape == ref.shape == (num_latent_frames(n), 12) and ext.dtype == torch.float32
    # the same numbers through every accepted spelling of the preset
    assert torch.equal(to_extrinsics(preset(f'cam{cam:02d}', n)), ext)
    assert torch.equal(to_extrinsics(preset(PRESET_NAMES[cam], n)), ext)

@pytest.mark.skipif(not TEN_TYPES.exists(), reason=f"reference camera file not found at {TEN_TYPES} (../shared beside the checkout)")
def test_reference_file_matches_analytic_presets():
    "01 checks this too, but inside `if ref_file.exists()`, silently; here a missing file is a reported skip."
    ref = load_camera_extrinsics(TEN_TYPES)
    assert list(ref) == [f'cam{i:02d}' for i in range(1, 11)]
    for i in range(1, 11):
        c2w = ref[f'cam{i:02d}']
        assert c2w.shape == (81, 4, 4)
        assert torch.allclose(c2w[40], torch.eye(4), atol=1e-5)          # the file passes the identity at frame 40
        err = (c2w - preset(i, full=True)).abs().max()
        assert err < 1e-4, (i, err)

# ---- preset behaviour -----------------------------------------------------------------------------------------------
def test_preset_spellings_and_errors():
    for spec in (5, '5', 'cam05', 'CAM5', 'zoom_in', 'Zoom-In'): assert preset_id(spec) == 5
    for bad in ('spin', 0, 11, 'cam00', True, 2.0, None):
        with pytest.raises(InfcamError, match='unknown camera preset'): preset(bad)
    with pytest.raises(InfcamError, match='4k\\+1'): preset(1, num_frames=80)
    with pytest.raises(InfcamError, match='distance='): preset('zoom_in', angle_deg=3)
    with pytest.raises(InfcamError, match='angle_deg='): preset('pan_left', distance=3)
    with pytest.raises(InfcamError, match='target_distance'): preset('pan_left', target_distance=3)
    with pytest.raises(InfcamError, match='finite'): preset('pan_left', extent=float('nan'))

def test_every_preset_is_rigid_and_passes_identity_at_frame_40():
    for i in range(1, 11):
        P = preset(i, full=True)
        assert P.shape == (81, 4, 4) and P.dtype == torch.float32
        R = P[:, :3, :3]
        assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3).expand(81, 3, 3), atol=1e-5)
        assert torch.allclose(torch.linalg.det(R), torch.ones(81), atol=1e-5)
        assert torch.allclose(P[40], torch.eye(4), atol=1e-6)
        assert torch.equal(preset(i), P[::4, :3])                             # latent frames are frames 0, 4, ..., 80

def test_preset_extents_and_directions():
    k = 40 / 40.25                                                           # frame 0 is 40 frames from the identity
    ypr0 = lambda i, **kw: rotation_to_ypr(preset(i, full=True, **kw)[0, :3, :3])
    assert abs(ypr0('pan_right')[0] + 10 * k) < 1e-4 and abs(ypr0('pan_left')[0] - 10 * k) < 1e-4
    assert abs(ypr0('tilt_up')[1] + 5 * k) < 1e-4                           # tilt up starts looking down
    assert abs(ypr0('pan_right', extent=0.5)[0] + 5 * k) < 1e-4
    assert abs(ypr0('pan_right', angle_deg=30)[0] + 30 * k) < 1e-3
    assert abs(ypr0('tilt_down', angle_deg=2, extent=3)[1] - 6 * k) < 1e-4
    assert abs(preset('zoom_in', full=True)[0, 2, 3] + k) < 1e-5             # zoom in starts 0.994 m behind
    assert abs(preset('zoom_out', distance=2, full=True)[0, 2, 3] - 2 * k) < 1e-5
    # translate up rises (y points down) by 0.5 m * 40/40.25 towards frame 40 and tilts by about 7 degrees
    P = preset('translate_up', full=True)
    assert abs(P[0, :3, 3].norm() - 0.5 * k) < 1e-4 and P[0, 1, 3] > 0 and P[80, 1, 3] < 0
    assert abs(rotation_to_ypr(P[0, :3, :3])[1] - 7.0812) < 1e-3 and abs(rotation_to_ypr(P[80, :3, :3])[1] + 6.8713) < 1e-3
    # arc left starts on the right, ends on the left, turning right; arc right mirrors it
    A = preset('arc_left', full=True)
    assert A[0, 0, 3] > 1.0 and A[80, 0, 3] < -1.0 and rotation_to_ypr(A[80, :3, :3])[0] > 14.9
    B = preset('arc_right', full=True)
    assert torch.allclose(B[:, 0, 3], -A[:, 0, 3], atol=1e-6)
    # a larger target distance with the same angle travels further
    assert preset('arc_left', target_distance=8, full=True)[0, 0, 3] > 1.9 * A[0, 0, 3]

def test_look_at_presets_keep_their_point_on_the_axis():
    for name, target in (('arc_left', None), ('translate_down', None)):
        P = preset(name, full=True).double()
        # the optical axes of all frames meet in one point: least-squares intersection, then check the residual
        o, d = P[:, :3, 3], P[:, :3, 2]
        M = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]
        p = torch.linalg.solve(M.sum(0), (M @ o[:, :, None]).sum(0))[:, 0]
        dist = ((torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]) @ (p - o)[:, :, None]).norm(dim=1)
        assert dist.max() < 1e-4, (name, dist.max())
        assert 3.5 < p[2] < 4.5                                               # about 4 m ahead of the source

def test_preset_shorter_clips_truncate_or_continue():
    "(01 checks stretch=True.)"
    full = preset('tilt_down', 81, full=True)
    assert torch.equal(preset('tilt_down', 41, full=True), full[:41])         # the reference's 41-frame presets
    assert torch.equal(preset('tilt_down', 17, full=True), full[:17])
    longer = preset('tilt_down', 101, full=True)                              # longer clips continue the motion
    assert torch.allclose(longer[:81], full, atol=1e-6) and rotation_to_ypr(longer[100, :3, :3])[1] < rotation_to_ypr(full[80, :3, :3])[1]

def test_ref_frame_zero_is_the_same_motion():
    "Same motion, other reference: P_ref0 = inv(P_ref40[0]) @ P_ref40 (01 checks two matrices of InfCam's ref0 file)."
    for i in range(1, 11):
        P40 = preset(i, full=True)
        assert torch.allclose(preset(i, full=True, ref_frame=0), relative_poses(P40[0], P40), atol=2e-6)

# ---- Unreal files ---------------------------------------------------------------------------------------------------
def test_unreal_conversion_is_transpose_permute_flip_scale():
    "The conversion written out step by step, on a rotated matrix and a batch (01 checks the identity and the round trip)."
    m = parse_unreal_matrix("[0.17258 0 0.984996 0] [0.984996 0 -0.17258 0] [-0 -1 -0 0] [10 -20 30 1] ")
    ref = m.T[:, [1, 2, 0, 3]].clone(); ref[:3, 1] *= -1; ref[:3, 3] /= 100
    assert torch.equal(unreal_to_opencv(m), ref)
    assert torch.equal(unreal_to_opencv(m[None].expand(3, 4, 4)), ref.expand(3, 4, 4))

def test_parse_unreal_matrix_errors():
    for bad, msg in (("[1 0 0 0] [0 1 0 0] [0 0 1 0]", 'four bracketed rows'), ("[1 0 0] [0 1 0] [0 0 1] [0 0 0]", 'rows have'),
                     ("[1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 a 1]", 'not a number'), ("[1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 nan 1]", 'NaN'),
                     ("junk [1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1]", 'four bracketed rows'), (3, 'got int')):
        with pytest.raises(InfcamError, match=msg): parse_unreal_matrix(bad)

def test_save_load_camera_extrinsics_is_exact(tmp_path):
    cams = {'cam01': random_poses(9, 0), 'cam07': random_poses(9, 1), 'cam02': preset(3, 9, full=True)}
    p = save_camera_extrinsics(tmp_path / 'camera_extrinsics.json', cams)
    back = load_camera_extrinsics(p)
    assert list(back) == list(cams)
    for c in cams: assert torch.equal(back[c], cams[c]) and back[c].dtype == torch.float32
    data = json.loads(p.read_text())
    assert list(data) == [f'frame{i}' for i in range(9)]
    assert data['frame0']['cam02'].count('[') == 4 and data['frame0']['cam02'].endswith('1] ')
    assert not list(tmp_path.glob('.*'))                                   # written atomically, nothing left over
    with pytest.raises(InfcamError, match='already exists'): save_camera_extrinsics(p, cams, overwrite=False)
    with pytest.raises(InfcamError, match='different frame counts'): save_camera_extrinsics(tmp_path / 'x.json', {'a': cams['cam01'], 'b': cams['cam07'][:5]})
    with pytest.raises(InfcamError, match='NaN'): save_camera_extrinsics(tmp_path / 'x.json', {'a': cams['cam01'] * float('nan')})

@pytest.mark.parametrize('content,msg', [
    ('{"frame0": {', 'is not valid JSON'),
    ('[1, 2]', 'expected an object'),
    ('{"frame0": {"cam01": "[0 0 1 0] [1 0 0 0] [-0 -1 -0 0] [0 0 0 1]"}, "meta": 3}', "unexpected key 'meta'"),
    ('{"frame0": {"cam01": "[0 0 1 0] [1 0 0 0] [-0 -1 -0 0] [0 0 0 1]", "cam02": "[0 0 1 0] [1 0 0 0] [-0 -1 -0 0] [0 0 0 1]"},'
     ' "frame1": {"cam01": "[0 0 1 0] [1 0 0 0] [-0 -1 -0 0] [0 0 0 1]"}}', 'frame1 lacks camera(s) cam02'),
    ('{"frame0": {"cam01": "[0 0 1 0] [1 0 0 0] [-0 -1 0]"}}', 'frame0.cam01: malformed matrix'),
    ('{"frame0": {"cam01": "[0 0 2 0] [1 0 0 0] [-0 -1 -0 0] [0 0 0 1]"}}', 'frame0.cam01 is not a rigid transform'),
])
def test_load_camera_extrinsics_errors_name_file_and_problem(tmp_path, content, msg):
    p = tmp_path / 'camera_extrinsics.json'; p.write_text(content)
    with pytest.raises(InfcamError, match='camera_extrinsics.json') as e: load_camera_extrinsics(p)
    assert msg in str(e.value) and '\n' not in str(e.value)

def test_load_camera_extrinsics_missing_file(tmp_path):
    with pytest.raises(InfcamError, match='cannot read camera file .*nope.json'): load_camera_extrinsics(tmp_path / 'nope.json')

# ---- relative poses, latent frames, extrinsics -----------------------------------------------------------------------
def test_relative_poses_one_reference_for_a_batch():
    "(01 checks a reference per trajectory, a single one, and the reference becoming the identity.)"
    ref, poses = random_poses(3, 2), random_poses(15, 3).reshape(3, 5, 4, 4)
    one_ref = relative_poses(ref[0], poses)                                 # one reference for every trajectory
    assert one_ref.shape == (3, 5, 4, 4) and torch.allclose(one_ref, torch.linalg.inv(ref[0]) @ poses, atol=1e-4)

def test_latent_frames_edge_cases():
    "(01 checks 81, 41 and 1 frames and refuses 80.)"
    assert latent_frame_indices(5) == [0, 4]
    for bad in (0, 2, 10, 80, -3, 81.0, '81', True):
        with pytest.raises(InfcamError, match='4k\\+1'): num_latent_frames(bad)

def test_extrinsics_flatten_row_major():
    P = random_poses(6, 4).reshape(2, 3, 4, 4)
    e = to_extrinsics(P)
    assert e.shape == (2, 3, 12)
    assert torch.equal(e[1, 2], torch.cat([P[1, 2, 0], P[1, 2, 1], P[1, 2, 2]]))
    assert torch.equal(from_extrinsics(e), P) and torch.equal(to_extrinsics(P[..., :3, :]), e)
    with pytest.raises(InfcamError, match='12'): from_extrinsics(torch.zeros(3, 11))

def test_look_at_keeps_the_horizon_level():
    "(01 checks the yaw/pitch/roll directions and round trip.)"
    P = look_at(torch.tensor([1., -2., 0.]), torch.tensor([0., 0., 5.]))
    assert torch.allclose(P[:3, 2], torch.tensor([-1., 2., 5.]) / math.sqrt(30), atol=1e-6) and abs(P[1, 0]) < 1e-7   # level horizon

# ---- intrinsics -----------------------------------------------------------------------------------------------------
def test_intrinsics():
    "(01 checks 24 mm at 832x480 both ways round, the vertical round trip, a 90 degree view and the K4 layout.)"
    f = focal_mm_to_px(24, 480, 832)
    assert abs(f - 24 * 832 / 23.76) < 1e-9
    assert abs(focal_mm_to_px(50, 320, 544) - 50 * 544 / SENSOR_MM) < 1e-9
    for axis in ('horizontal', 'diagonal'):
        assert abs(fov_to_focal_px(focal_px_to_fov(f, 480, 832, axis), 480, 832, axis) - f) < 1e-6
    assert abs(fov_to_focal_px(90., 480, 832, 'vertical') - 240) < 1e-9
    ft = focal_mm_to_px(torch.tensor([18., 24., 35., 50.]), 480, 832)
    assert torch.allclose(focal_px_to_fov(ft, 480, 832), torch.tensor([focal_px_to_fov(float(v), 480, 832) for v in ft]))
    K4 = pixel_intrinsics(f, 480, 832)
    assert K4.dtype == torch.float32 and torch.allclose(K4, torch.tensor([840.404, 840.404, 416., 240.]), atol=1e-3)
    assert torch.allclose(normalize_intrinsics(K4, 832), torch.tensor([840.404 / 832, 840.404 / 832, 0.5, 240 / 832]), atol=1e-5)
    K = intrinsics_matrix(pixel_intrinsics(ft, 480, 832))
    assert K.shape == (4, 3, 3) and torch.equal(K[:, 2], torch.tensor([0., 0., 1.]).expand(4, 3)) and torch.equal(K[:, 0, 0], ft)
    for call, msg in ((lambda: focal_mm_to_px(0, 480, 832), 'positive'), (lambda: focal_px_to_mm(-5., 480, 832), 'positive'),
                      (lambda: fov_to_focal_px(0, 480, 832), 'between 0 and 180'), (lambda: fov_to_focal_px(60, 480, 832, 'oblique'), 'oblique'),
                      (lambda: intrinsics_matrix(torch.ones(3)), '(..., 4)')):
        with pytest.raises(InfcamError, match=msg): call()

# ---- plotting -------------------------------------------------------------------------------------------------------
def test_plot_trajectory_returns_3d_axes():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ax = plot_trajectory(preset('arc_left', full=True))
    assert ax.name == '3d' and len(ax.collections) == 1
    ax = plot_trajectory([preset(9, full=True), preset(10, 41, full=True)[:, :3]], labels=['a', 'b'], every=10)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['a', 'b'] and len(ax.collections) == 2
    with pytest.raises(InfcamError, match='labels'): plot_trajectory([preset(1, full=True)], labels=['a', 'b'])
    plt.close('all')

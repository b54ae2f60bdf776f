"Tests for infcam.intrinsics: explicit and default intrinsics, self-calibration on rendered rotating clips, errors, targets."
import math
import sys
import numpy as np
import pytest
import torch
from infcam.core import InfcamError
from infcam.cameras import focal_mm_to_px, ypr_to_rotation
from infcam.render import make_env_map
from infcam.intrinsics import (IntrinsicsEstimate, default_intrinsics, estimate_intrinsics, target_intrinsics, selfcal_focal,
                               rotation_residual, reprojection_residual, best_rotation, unidepth_focal, rotation_clip)

import cv2  # noqa: F401  (a requirement: fail, never skip, if it is missing)

TOL = 0.03          # relative focal error allowed on pure-rotation clips (measured: under 1% at 128x224)


@pytest.fixture(scope='module')
def env():
    return make_env_map(256, 512, 0)


@pytest.fixture(scope='module')
def clip24(env):
    return rotation_clip(24., env=env)


# ---------------------------------------------------------------- default and explicit

def test_default_is_24mm_on_longer_side():
    e = estimate_intrinsics((480, 832))
    assert isinstance(e, IntrinsicsEstimate) and e.method == 'default' and e.K4.dtype == torch.float32
    torch.testing.assert_close(e.K4, torch.tensor([24 * 832 / 23.76, 24 * 832 / 23.76, 416., 240.]), atol=1e-3, rtol=0)
    assert abs(e.focal_mm - 24) < 1e-4 and 'default' in e.message
    # portrait: the longer side is the height
    torch.testing.assert_close(default_intrinsics(832, 480)[:2], torch.full((2,), 24 * 832 / 23.76), atol=1e-3, rtol=0)


def test_explicit_modes_exact(clip24):
    H, W = 128, 224
    e = estimate_intrinsics(clip24[0], 'explicit', focal_mm=35.)
    assert e.method == 'explicit' and abs(e.K4[0].item() - 35 * W / 23.76) < 1e-3 and abs(e.focal_mm - 35) < 1e-4
    e = estimate_intrinsics((H, W), fov=90.)                                   # explicit under 'default'
    assert e.method == 'explicit'
    torch.testing.assert_close(e.K4, torch.tensor([112., 112., 112., 64.]), atol=1e-4, rtol=0)
    e = estimate_intrinsics((H, W), 'explicit', fx=321.5)
    assert e.K4.tolist() == [321.5, 321.5, 112., 64.]


def test_argument_errors(clip24):
    v = clip24[0]
    for call, msg in [(lambda: estimate_intrinsics(v, 'magic'), 'unknown intrinsics method'),
                      (lambda: estimate_intrinsics(v, 'explicit'), 'needs focal_mm'),
                      (lambda: estimate_intrinsics(v, focal_mm=24, fx=100), 'give one of'),
                      (lambda: estimate_intrinsics(v, 'selfcal', fov=60), 'estimates the focal length'),
                      (lambda: estimate_intrinsics(v, 'explicit', fx=-3.), 'positive'),
                      (lambda: estimate_intrinsics(torch.zeros(4, 128, 224), 'selfcal'), '(F, 3, H, W)'),
                      (lambda: selfcal_focal(v, criterion='nope'), 'criterion')]:
        with pytest.raises(InfcamError, match=msg.replace('(', r'\(').replace(')', r'\)')): call()


# ---------------------------------------------------------------- the residuals

def test_residuals_vanish_at_true_focal():
    K = np.array([[200., 0, 111.5], [0, 200., 63.5], [0, 0, 1]])
    R = ypr_to_rotation(8., 3., 1.).double().numpy()
    H = K @ R @ np.linalg.inv(K)
    P = np.random.default_rng(0).uniform([0, 0], [223, 127], (60, 2))
    X = np.c_[P, np.ones(60)] @ H.T
    Q = X[:, :2] / X[:, 2:]
    fs = np.array([160., 200., 250.])
    r1, r2 = rotation_residual(H[None], fs, 111.5, 63.5)[:, 0], reprojection_residual(P, Q, fs, 111.5, 63.5)
    assert r1[1] < 1e-12 and r2[1] < 1e-8 and r1[[0, 2]].min() > 1e-3 and r2[[0, 2]].min() > 1.
    np.testing.assert_allclose(best_rotation(P, Q, 200., 111.5, 63.5)[0], R, atol=1e-6)


# ---------------------------------------------------------------- self-calibration on rendered rotations

@pytest.mark.parametrize('mm', [18., 35., 50.])
def test_selfcal_pure_rotation(env, mm):
    clip, f = rotation_clip(mm, env=env)
    e = estimate_intrinsics(clip, 'selfcal')
    assert e.method == 'selfcal'
    assert abs(e.focal_px / f - 1) < TOL, (mm, e.focal_px, f)
    assert e.K4[2:].tolist() == [112., 64.] and abs(e.focal_mm / mm - 1) < TOL
    d = e.diagnostics
    assert d['pairs'] >= 3 and 0 <= d['confidence'] <= 1 and d['sharpness'] > 0.05 and d['rms_px'] < 1.


def test_selfcal_homography_criterion(clip24):
    f, d = selfcal_focal(clip24[0], criterion='homography')
    assert abs(f / clip24[1] - 1) < 0.05 and d['criterion'] == 'homography'


def test_selfcal_downscaled_tracking(clip24):
    # tracking on a half-size copy must report the focal length in the video's own pixels
    f, d = selfcal_focal(clip24[0], max_side=112)
    assert d['tracking_scale'] == 2. and abs(f / clip24[1] - 1) < 0.06


def test_static_clip_error_and_fallback(clip24):
    still = clip24[0][:1].expand(6, -1, -1, -1).clone()
    with pytest.raises(InfcamError, match='barely moves'): estimate_intrinsics(still, 'selfcal')
    e = estimate_intrinsics(still, 'selfcal', fallback=True)
    assert e.method == 'default' and 'fell back' in e.message and 'barely moves' in e.message
    torch.testing.assert_close(e.K4, default_intrinsics(128, 224))
    assert e.diagnostics['requested'] == 'selfcal'


def test_textureless_and_roll_only(env):
    with pytest.raises(InfcamError, match='too few trackable features'):
        selfcal_focal(torch.full((4, 3, 64, 96), 0.5))
    roll, _ = rotation_clip(24., yaw=0., pitch=0., roll=6., env=env)      # roll about the optical axis: f is free
    with pytest.raises(InfcamError, match='self-calibration failed'): selfcal_focal(roll)


# ---------------------------------------------------------------- UniDepth

def test_unidepth_missing_is_clear(clip24, monkeypatch):
    monkeypatch.setitem(sys.modules, 'unidepth', None)          # as if not installed, even where it is
    monkeypatch.setitem(sys.modules, 'unidepth.models', None)
    with pytest.raises(InfcamError, match='pip install'): unidepth_focal(clip24[0])
    with pytest.raises(InfcamError, match='UniDepth'): estimate_intrinsics(clip24[0], 'unidepth')
    e = estimate_intrinsics(clip24[0], 'unidepth', fallback=True)
    assert e.method == 'default' and 'fell back' in e.message


# ---------------------------------------------------------------- the target camera

def test_target_intrinsics():
    K = default_intrinsics(480, 832)
    torch.testing.assert_close(target_intrinsics(K), K)
    torch.testing.assert_close(target_intrinsics(K, 1.5)[:2], K[:2] * 1.5)
    torch.testing.assert_close(target_intrinsics(K, focal_mm=50.), default_intrinsics(480, 832, 50.), atol=1e-3, rtol=0)
    torch.testing.assert_close(target_intrinsics(K, height=240, width=416), default_intrinsics(240, 416), atol=1e-3, rtol=0)
    assert target_intrinsics(K.expand(5, 4), 2.).shape == (5, 4)
    with pytest.raises(InfcamError, match='not both'): target_intrinsics(K, 2., focal_mm=50.)
    with pytest.raises(InfcamError, match='zoom'): target_intrinsics(K, 0.)


def test_video_path(tmp_path, env):
    from infcam.video import write_video
    clip, f = rotation_clip(24., frames=17, env=env)
    p = write_video(tmp_path / 'pan.mp4', clip)
    e = estimate_intrinsics(p, 'selfcal', max_frames=9)                  # 9 evenly spaced frames of the file
    assert e.diagnostics['frames'] == 9 and (e.height, e.width) == (128, 224) and abs(e.focal_px / f - 1) < TOL
    torch.testing.assert_close(estimate_intrinsics(p).K4, default_intrinsics(128, 224))

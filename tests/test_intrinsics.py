"""infcam.intrinsics beyond the examples of nbs/31_intrinsics.ipynb (which nbdev_test runs): edge cases, error messages,
diagnostics, downscaled tracking, roll-only clips, UniDepth missing even where installed, video files. 31 already
asserts the residuals, self-calibration at 18-50 mm with both criteria, the default and explicit modes, the fallback
and the target camera; those are checked there only."""
import sys
import pytest
import torch
from infcam.core import InfcamError
from infcam.render import make_env_map
from infcam.intrinsics import (IntrinsicsEstimate, default_intrinsics, estimate_intrinsics, target_intrinsics, selfcal_focal,
                               unidepth_focal, rotation_clip)

import cv2  # noqa: F401  (a requirement: fail, never skip, if it is missing)

TOL = 0.03          # relative focal error allowed on pure-rotation clips (measured: under 1% at 128x224)


@pytest.fixture(scope='module')
def env():
    return make_env_map(256, 512, 0)


@pytest.fixture(scope='module')
def clip24(env):
    return rotation_clip(24., env=env)


# ---------------------------------------------------------------- default and explicit

def test_default_estimate_type_and_portrait():
    "(31 checks the default K4 and focal length at 832x480.)"
    e = estimate_intrinsics((480, 832))
    assert isinstance(e, IntrinsicsEstimate) and e.K4.dtype == torch.float32 and 'default' in e.message
    # portrait: the longer side is the height
    torch.testing.assert_close(default_intrinsics(832, 480)[:2], torch.full((2,), 24 * 832 / 23.76), atol=1e-3, rtol=0)


def test_explicit_modes_are_named_explicit(clip24):
    "A lens given under 'default' is reported as 'explicit' (31 checks the K4 of focal_mm, fov and fx)."
    H, W = 128, 224
    e = estimate_intrinsics(clip24[0], 'explicit', focal_mm=35.)
    assert e.method == 'explicit' and abs(e.K4[0].item() - 35 * W / 23.76) < 1e-3 and abs(e.focal_mm - 35) < 1e-4
    assert estimate_intrinsics((H, W), fov=90.).method == 'explicit'


def test_argument_errors(clip24):
    "(31 checks an unknown method, a missing or doubled lens, and a lens given to selfcal.)"
    v = clip24[0]
    for call, msg in [(lambda: estimate_intrinsics(v, 'explicit', fx=-3.), 'positive'),
                      (lambda: estimate_intrinsics(torch.zeros(4, 128, 224), 'selfcal'), '(F, 3, H, W)'),
                      (lambda: selfcal_focal(v, criterion='nope'), 'criterion')]:
        with pytest.raises(InfcamError, match=msg.replace('(', r'\(').replace(')', r'\)')): call()


# ---------------------------------------------------------------- self-calibration on rendered rotations

def test_selfcal_reports_focal_mm_and_diagnostics(clip24):
    "(31 checks the focal error at 18, 24, 35 and 50 mm and the selfcal estimate's K4.)"
    e = estimate_intrinsics(clip24[0], 'selfcal')
    assert e.method == 'selfcal' and abs(e.focal_mm / 24 - 1) < TOL
    d = e.diagnostics
    assert d['pairs'] >= 3 and 0 <= d['confidence'] <= 1 and d['sharpness'] > 0.05 and d['rms_px'] < 1.


def test_selfcal_downscaled_tracking(clip24):
    # tracking on a half-size copy must report the focal length in the video's own pixels
    f, d = selfcal_focal(clip24[0], max_side=112)
    assert d['tracking_scale'] == 2. and abs(f / clip24[1] - 1) < 0.06


def test_static_clip_fallback_is_the_default(clip24):
    "The fallback's K4 and diagnostics (31 checks the error, and the fallback's method and message)."
    still = clip24[0][:1].expand(6, -1, -1, -1).clone()
    e = estimate_intrinsics(still, 'selfcal', fallback=True)
    torch.testing.assert_close(e.K4, default_intrinsics(128, 224))
    assert e.diagnostics['requested'] == 'selfcal'


def test_roll_only_clip_fails(env):
    "Roll about the optical axis leaves the focal length free (31 checks a textureless clip)."
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

def test_target_intrinsics_refuses_zero_zoom():
    "(31 checks the identity, zoom, focal_mm, resizing, batching and zoom with focal_mm.)"
    with pytest.raises(InfcamError, match='zoom'): target_intrinsics(default_intrinsics(480, 832), 0.)


def test_video_path(tmp_path, env):
    from infcam.video import write_video
    clip, f = rotation_clip(24., frames=17, env=env)
    p = write_video(tmp_path / 'pan.mp4', clip)
    e = estimate_intrinsics(p, 'selfcal', max_frames=9)                  # 9 evenly spaced frames of the file
    assert e.diagnostics['frames'] == 9 and (e.height, e.width) == (128, 224) and abs(e.focal_px / f - 1) < TOL
    torch.testing.assert_close(estimate_intrinsics(p).K4, default_intrinsics(128, 224))

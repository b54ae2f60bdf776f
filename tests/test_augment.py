"Tests for infcam.augment: exact refocus geometry (against re-renders), re-timing consistency, layout, resume, parallel."
import csv, json, math, shutil
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from infcam.core import InfcamError
from infcam.cameras import load_camera_extrinsics, focal_mm_to_px, pixel_intrinsics
from infcam.synthetic import SceneSpec, make_scene, render_cameras, camera_poses, write_scene, load_scene
from infcam.layout import scene_complete, scene_focal_mm
from infcam.video import read_video
from infcam.augment import (crop_factor, refocus, refocus_intrinsics, refocus_uint8, shift_indices, reverse_indices,
                            palindrome_indices, trajectory_plan, retime, shift_window, reverse_window, palindrome_window,
                            augment, source_scenes, default_window, FOCAL_TARGETS)

def psnr(a, b): return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))
# cheap scenes: ground plane, one object, still world; seed 2 and <= 24 mm at 64 px share a cached 128-row sky
CHEAP = dict(seed=2, num_frames=9, height=32, width=64, num_moving=0, num_objects=1, kind='landscape')

@pytest.fixture(scope='module')
def mcv(tmp_path_factory):
    "A two-scene MultiCamVideo root (18 mm and 24 mm) with a metadata.csv."
    root = tmp_path_factory.mktemp('mcv')
    for f in (18, 24): write_scene(root, None, 'scene1', SceneSpec(focal_mm=f, **CHEAP))
    from infcam.synthetic import write_metadata
    write_metadata(root)
    return root

def snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(folder).rglob('*') if p.is_file()}

# ---------------------------------------------------------------- geometry on tensors
def test_refocus_exact_on_analytic_image():
    "A smooth image known at every continuous point: the refocus must sample it at W/2 + c (x' + 0.5 - W/2) exactly."
    H, W = 48, 80
    def img(x, y):   # continuous coordinates (pixel centres at i + 0.5)
        return 0.5 + 0.2 * torch.cos(2 * math.pi * (x - 3.3) / 37) * torch.sin(2 * math.pi * (y + 1.7) / 29) + 0.1 * torch.sin(x * y / 400)
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing='ij')
    src = img(xs, ys).expand(1, 3, H, W)
    errs = {}
    for f_dst in (35, 50):
        c = crop_factor(24, f_dst)
        want = img(W / 2 + c * (xs - W / 2), H / 2 + c * (ys - H / 2))
        got = refocus(src, c)[0, 0]
        errs[f_dst] = float((got - want).abs().max())
        assert errs[f_dst] < 4e-3, errs
        wrong = refocus(src, c * 1.01)[0, 0]                     # a 1% focal error is over twice the resampling error
        assert float((wrong - want).abs().max()) > 2.5 * errs[f_dst]
    # the integer crop-and-resize a naive implementation does (76.8 -> 77 px) is measurably off
    c = 24 / 35; cw, ch = round(W * c), round(H * c)
    naive = F.interpolate(src[..., (H - ch) // 2:(H - ch) // 2 + ch, (W - cw) // 2:(W - cw) // 2 + cw], size=(H, W),
                          mode='bicubic', align_corners=False)[0, 0]
    want = img(W / 2 + c * (xs - W / 2), H / 2 + c * (ys - H / 2))
    assert float((naive - want).abs().max()) > 10 * errs[35]

def test_refocus_intrinsics():
    K = pixel_intrinsics(focal_mm_to_px(18, 64, 112), 64, 112)
    for f in FOCAL_TARGETS[18.]:
        torch.testing.assert_close(refocus_intrinsics(K, crop_factor(18, f), 64, 112), pixel_intrinsics(focal_mm_to_px(f, 64, 112), 64, 112))
    off = refocus_intrinsics(torch.tensor([100., 100., 60., 30.]), 0.5, 64, 112)       # off-centre principal point
    torch.testing.assert_close(off, torch.tensor([200., 200., 56 + 8., 32 - 4.]))
    assert FOCAL_TARGETS == {18.: (24., 35., 50.), 24.: (35., 50.), 35.: (50.,), 50.: ()}
    with pytest.raises(InfcamError, match='longer lens'): crop_factor(50, 35)
    with pytest.raises(InfcamError, match='longer lens'): crop_factor(24, 24)

def test_refocus_matches_rerender_tensors():
    "Refocused renders equal renders at the new focal up to resampling; 5% off in focal is clearly worse."
    spec = SceneSpec(seed=2, num_frames=5, height=64, width=112, ss=2, num_moving=0, num_objects=2, kind='landscape')
    scene, c2w = make_scene(spec), camera_poses(spec)['cam09'][None, ::4]
    src = render_cameras(scene, c2w, spec.intrinsics, 64, 112, ss=2)[0]
    for f in (35, 50):
        c = crop_factor(24, f)
        K = refocus_intrinsics(spec.intrinsics, c, 64, 112)
        true = render_cameras(scene, c2w, K, 64, 112, ss=2)[0]
        aug = refocus(src, c)
        scale = torch.tensor([1.05, 1.05, 1., 1.])
        good, lo, hi = psnr(aug, true), psnr(aug, render_cameras(scene, c2w, K * scale, 64, 112, ss=2)[0]), \
            psnr(aug, render_cameras(scene, c2w, K / scale, 64, 112, ss=2)[0])
        print(f"24->{f} mm: PSNR vs true render {good:.2f} dB, vs +5% focal {lo:.2f}, vs -5% focal {hi:.2f}")
        assert good > 24 and good > max(lo, hi) + 4
        print(f"   bilinear instead of bicubic: {psnr(refocus(src, c, 'bilinear'), true):.2f} dB")
        assert psnr(refocus(src, c, 'bilinear'), true) > max(lo, hi) + 3

def test_refocus_uint8_matches_float():
    x = torch.randint(0, 256, (3, 16, 24, 3), dtype=torch.uint8)
    a = refocus_uint8(x, 0.7, chunk=2)
    b = (refocus(x.permute(0, 3, 1, 2).double() / 255, 0.7) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    c = (refocus(x.permute(0, 3, 1, 2).float() / 255, 0.7) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and (a.float() - c.float()).abs().max() <= 1

# ---------------------------------------------------------------- re-timing functions
def test_retime_indices_and_consistency():
    assert shift_indices(81, 20, 41) == list(range(20, 61))
    assert reverse_indices(5) == [4, 3, 2, 1, 0]
    assert palindrome_indices(9) == [4, 5, 6, 7, 8, 7, 6, 5, 4] and palindrome_indices(9, 0) == [0, 1, 2, 3, 4, 3, 2, 1, 0]
    assert default_window(81) == 41 and default_window(9) == 5
    p = trajectory_plan(81)
    assert list(p) == ['_t20', '_t40', '_rev', '_pal'] and all((len(v) - 1) % 4 == 0 for v in p.values())
    assert list(trajectory_plan(81, 'shift', shifts=[8], window=73)) == ['_t8']
    assert trajectory_plan(81, None) == {}
    for bad in (lambda: shift_indices(9, 6, 5), lambda: shift_indices(9, 0, 4), lambda: palindrome_indices(9, 5),
                lambda: trajectory_plan(9, ('twist',))):
        with pytest.raises(InfcamError): bad()
    frames = torch.arange(9.)[:, None, None, None].expand(9, 3, 2, 2)
    c2w = torch.eye(4).repeat(2, 9, 1, 1); c2w[..., 0, 3] = torch.arange(9.)
    for fr, cc in (shift_window(frames, c2w, 4, 5), reverse_window(frames, c2w), palindrome_window(frames, c2w)):
        assert torch.equal(fr[:, 0, 0, 0], cc[0, :, 0, 3]) and torch.equal(cc[0], cc[1])
    fr, cams = retime(None, {'a': c2w[0]}, [3, 1])
    assert fr is None and cams['a'][:, 0, 3].tolist() == [3., 1.]

# ---------------------------------------------------------------- the dataset writer
def test_focal_outputs_match_rerender_after_encoding(mcv, tmp_path):
    rep = augment(mcv, tmp_path, trajectory=None, workers=0, progress=False)
    assert rep['failed'] == {}
    assert rep['written'] == ['f18_aperture10_aug/scene1_f24', 'f18_aperture10_aug/scene1_f35', 'f18_aperture10_aug/scene1_f50',
                              'f24_aperture5_aug/scene1_f35', 'f24_aperture5_aug/scene1_f50']
    src = mcv / 'f18_aperture10/scene1'
    spec = load_scene(src)['spec']
    scene, poses = make_scene(spec), load_camera_extrinsics(src / 'cameras/camera_extrinsics.json')
    out = tmp_path / 'f18_aperture10_aug/scene1_f35'
    assert scene_complete(out) and scene_focal_mm(out.parent.name, out.name) == 35.
    assert (out / 'cameras/camera_extrinsics.json').read_bytes() == (src / 'cameras/camera_extrinsics.json').read_bytes()
    meta = json.loads((out / 'augment.json').read_text())
    K = pixel_intrinsics(focal_mm_to_px(35, 32, 64), 32, 64)
    assert meta['kind'] == 'focal' and meta['focal_mm'] == 35 and meta['source'] == 'f18_aperture10/scene1'
    torch.testing.assert_close(torch.tensor(meta['intrinsics']), K)
    c2w = poses['cam04'][None]
    true = render_cameras(scene, c2w, K, 32, 64, ss=spec.ss)[0]
    got = read_video(out / 'videos/cam04.mp4')
    wrong = render_cameras(scene, c2w, K * torch.tensor([1.05, 1.05, 1, 1]), 32, 64, ss=spec.ss)[0]
    base = psnr(read_video(src / 'videos/cam04.mp4'), render_cameras(scene, c2w, spec.intrinsics, 32, 64, ss=spec.ss)[0])
    print(f"encoded: source vs its render {base:.2f} dB; 18->35 refocused vs 35 mm render {psnr(got, true):.2f} dB, "
          f"vs 36.75 mm render {psnr(got, wrong):.2f} dB")
    assert psnr(got, true) > psnr(got, wrong) + 1.5
    rows = list(csv.DictReader(open(tmp_path / 'metadata.csv', newline='')))
    assert len(rows) == 5 * 10
    caps = {r['file_name']: r['text'] for r in csv.DictReader(open(mcv / 'metadata.csv', newline=''))}
    for r in rows:
        s, name, _, cam = r['file_name'].split('/')
        assert r['text'] == caps[f"{s[:-4]}/{name.rsplit('_', 1)[0]}/videos/{cam}"] != ''

def test_retimed_outputs_rerender(mcv, tmp_path):
    rep = augment(mcv, tmp_path, focal_targets=(), workers=0, progress=False)
    assert rep['failed'] == {} and len(rep['written']) == 2 * 4
    src = mcv / 'f24_aperture5/scene1'
    spec = load_scene(src)['spec']
    scene = make_scene(spec)
    src_json = json.loads((src / 'cameras/camera_extrinsics.json').read_text())
    plan = trajectory_plan(9)
    base = psnr(read_video(src / 'videos/cam10.mp4'), render_cameras(scene, camera_poses(spec)['cam10'][None], spec.intrinsics, 32, 64, ss=spec.ss)[0])
    for suf in ('_rev', '_t4', '_pal'):
        out = tmp_path / f'f24_aperture5_aug/scene1{suf}'
        data = json.loads((out / 'cameras/camera_extrinsics.json').read_text())
        assert [data[f'frame{k}'] for k in range(len(plan[suf]))] == [src_json[f'frame{i}'] for i in plan[suf]]
        cams = load_camera_extrinsics(out / 'cameras/camera_extrinsics.json')
        got = read_video(out / 'videos/cam10.mp4')
        again = render_cameras(scene, cams['cam10'][None], spec.intrinsics, 32, 64, spec.times[plan[suf]], spec.ss)[0]
        unshuffled = render_cameras(scene, camera_poses(spec)['cam10'][None, :len(got)], spec.intrinsics, 32, 64, ss=spec.ss)[0]
        print(f"{suf}: re-render from rewritten json {psnr(got, again):.2f} dB, from the original order {psnr(got, unshuffled):.2f} dB")
        assert psnr(got, again) > psnr(got, unshuffled) + 1.5 and psnr(got, again) > base - 1.5
        assert json.loads((out / 'augment.json').read_text())['frames'] == plan[suf]

def test_resume_overwrite_and_recipe(mcv, tmp_path):
    kw = dict(focal_targets=[50], trajectory=('shift',), workers=0, progress=False)
    rep = augment(mcv, tmp_path, **kw)
    assert len(rep['written']) == 2 * 3
    before = snapshot(tmp_path / 'f18_aperture10_aug')
    meta_before = (tmp_path / 'metadata.csv').read_text()
    rep2 = augment(mcv, tmp_path, **kw)
    assert rep2['written'] == [] and len(rep2['skipped']) == 6 and rep2['failed'] == {}
    assert snapshot(tmp_path / 'f18_aperture10_aug') == before and (tmp_path / 'metadata.csv').read_text() == meta_before
    # a broken output (a video lost) and a stale temporary folder from a killed run are redone / removed
    (tmp_path / 'f18_aperture10_aug/scene1_f50/videos/cam07.mp4').unlink()
    (tmp_path / 'f18_aperture10_aug/.scene1_f50.tmp-dead').mkdir()
    rep3 = augment(mcv, tmp_path, **kw)
    assert rep3['written'] == ['f18_aperture10_aug/scene1_f50'] and scene_complete(tmp_path / 'f18_aperture10_aug/scene1_f50')
    assert not list((tmp_path / 'f18_aperture10_aug').glob('.*'))
    # the same name with another recipe: _t2 with a 1-frame window instead of 5 frames
    aug = json.loads((tmp_path / 'f24_aperture5_aug/scene1_t2/augment.json').read_text())
    rep4 = augment(mcv, tmp_path, focal_targets=(), trajectory=('shift',), shifts=[2], window=5, workers=0, progress=False)
    assert len(rep4['skipped']) == 2
    rep5 = augment(mcv, tmp_path, focal_targets=(), trajectory=('shift',), shifts=[2], window=1, workers=0, progress=False)
    assert set(rep5['failed']) == {'f18_aperture10/scene1', 'f24_aperture5/scene1'}
    assert 'another recipe' in rep5['failed']['f24_aperture5/scene1']
    assert json.loads((tmp_path / 'f24_aperture5_aug/scene1_t2/augment.json').read_text()) == aug      # untouched
    rep6 = augment(mcv, tmp_path, focal_targets=(), trajectory=('shift',), shifts=[2], window=1, workers=0, progress=False, overwrite=True)
    assert rep6['failed'] == {} and len(read_video(tmp_path / 'f24_aperture5_aug/scene1_t2/videos/cam01.mp4')) == 1

def test_parallel_equals_serial(mcv, tmp_path):
    kw = dict(focal_targets=[35], trajectory=('reverse',), progress=False)
    a = augment(mcv, tmp_path / 'serial', workers=0, **kw)
    b = augment(mcv, tmp_path / 'parallel', workers=2, **kw)
    assert a['written'] == b['written'] and len(a['written']) == 4 and b['failed'] == {}
    fa, fb = snapshot(tmp_path / 'serial'), snapshot(tmp_path / 'parallel')
    assert sorted(fa) == sorted(fb)
    worst = 99.
    for f in fa:
        pa, pb = tmp_path / 'serial' / f, tmp_path / 'parallel' / f
        if f.endswith('.mp4'): worst = min(worst, psnr(read_video(pa), read_video(pb)) if not torch.equal(read_video(pa), read_video(pb)) else 99.)
        else: assert pa.read_bytes() == pb.read_bytes(), f          # camera files, augment.json, metadata.csv: identical
    # H.264 through PyAV is not bit-reproducible even within one process (the same frames encoded twice differ by a
    # few grey levels at CRF 18); the videos agree up to that
    print(f"parallel vs serial videos: worst PSNR {worst:.1f} dB")
    assert worst > 33

def test_encoder_noise_is_the_only_difference(mcv):
    "The frames handed to the encoder are bit-identical in a worker process and in this one."
    import concurrent.futures as cf, multiprocessing as mp
    from infcam.augment import decode_clip
    path = mcv / 'f24_aperture5/scene1/videos/cam08.mp4'
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')) as ex:
        there = ex.submit(_refocused, str(path)).result()
    assert torch.equal(there, _refocused(str(path)))

def _refocused(path):
    from infcam.augment import decode_clip
    return refocus_uint8(decode_clip(path)[0], 24 / 35)

def test_bad_scene_reported_not_fatal(mcv, tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(mcv, src)
    (src / 'f18_aperture10/scene1/videos/cam05.mp4').write_bytes(b'not a video')
    rep = augment(src, tmp_path / 'out', focal_targets=[50], trajectory=None, workers=0, progress=False)
    assert list(rep['failed']) == ['f18_aperture10/scene1'] and 'cam05.mp4' in rep['failed']['f18_aperture10/scene1']
    assert rep['written'] == ['f24_aperture5_aug/scene1_f50']
    assert not (tmp_path / 'out/f18_aperture10_aug/scene1_f50').exists()
    assert not list((tmp_path / 'out/f18_aperture10_aug').glob('.*'))
    with pytest.raises(InfcamError, match='no complete scenes'): augment(tmp_path / 'out', tmp_path / 'x', progress=False)
    assert [p.name for p in source_scenes(src)] == ['scene1', 'scene1']

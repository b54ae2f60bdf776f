"Tests for infcam.synthetic: MultiCamVideo layout, camera file read-back, determinism, resume and overwrite rules."
import csv, json, os
from dataclasses import asdict
from pathlib import Path
import pytest
import torch
from infcam.core import InfcamError
from infcam.cameras import load_camera_extrinsics, rigid_inverse
from infcam.video import read_video, video_info
import infcam.synthetic as syn
from infcam.synthetic import (SceneSpec, camera_poses, base_pose, make_scene, render_cameras, render_scene, write_scene,
                              load_scene, scene_pair, make_dataset, synth, scene_caption)
from infcam.layout import scene_complete

TINY = dict(num_frames=5, height=16, width=32)          # 10 cameras x 5 frames: a fraction of a second
CAMS = [f'cam{i:02d}.mp4' for i in range(1, 11)]

def psnr(a, b): return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))
def luma(x): return (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(-3)
def snapshot(folder: Path):
    "Every file under folder with its inode and modification time, to show it was left untouched."
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob('*') if p.is_file()}

def test_layout_and_names(tmp_path):
    spec = SceneSpec(seed=3, **TINY)
    path = write_scene(tmp_path, None, 'scene1', spec)
    assert path == tmp_path / 'f24_aperture5' / 'scene1'
    assert sorted(p.name for p in (path / 'videos').iterdir()) == CAMS
    assert (path / 'cameras' / 'camera_extrinsics.json').is_file()
    assert sorted(p.name for p in path.iterdir()) == ['cameras', 'scene.json', 'videos']
    assert [p.name for p in (tmp_path / 'f24_aperture5').iterdir()] == ['scene1']         # no temporary folder left
    assert video_info(path / 'videos' / 'cam10.mp4') == dict(frames=5, fps=16.0, height=16, width=32)
    data = json.loads((path / 'cameras' / 'camera_extrinsics.json').read_text())
    assert list(data) == [f'frame{i}' for i in range(5)] and list(data['frame0']) == [c[:-4] for c in CAMS]
    assert data['frame0']['cam01'].count('[') == 4 and data['frame0']['cam01'].endswith('] ')
    meta = json.loads((path / 'scene.json').read_text())
    assert SceneSpec.from_dict(meta['spec']) == spec and meta['caption'] == scene_caption(spec)
    assert meta['cameras']['cam09'] == 'arc_left'

def test_dataset_metadata_and_depth(tmp_path):
    paths = make_dataset(tmp_path, 2, seed=4, focal_mms=(24, 50), progress=False, save_depth=True, **TINY)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == \
        ['f24_aperture5/scene1', 'f24_aperture5/scene2', 'f50_aperture2.4/scene1', 'f50_aperture2.4/scene2']
    rows = list(csv.reader(open(tmp_path / 'metadata.csv', newline='')))
    assert rows[0] == ['file_name', 'text'] and len(rows) == 1 + 4 * 10
    assert rows[1][0] == 'f24_aperture5/scene1/videos/cam01.mp4'
    assert rows[11][0] == 'f24_aperture5/scene2/videos/cam01.mp4'
    for name, text in rows[1:]:
        assert (tmp_path / name).is_file()
        assert text == json.loads((tmp_path / name).parent.parent.joinpath('scene.json').read_text())['caption']
    assert rows[1][1] == scene_caption(SceneSpec(seed=4, **TINY))          # scene i uses seed + i - 1
    assert rows[11][1] == scene_caption(SceneSpec(seed=5, **TINY))
    dep = torch.from_numpy(__import__('numpy').load(paths[0] / 'depth' / 'cam01.npy').astype('float32'))
    assert dep.shape == (5, 16, 32) and dep.isinf().any() and (dep[dep.isfinite()] > 0.5).all()
    # focal length changes the intrinsics, not the world
    a, b = load_scene(paths[0]), load_scene(paths[2])
    assert b['K4'][0] / a['K4'][0] == pytest.approx(50 / 24, rel=1e-5)
    torch.testing.assert_close(a['cameras']['cam03'], b['cameras']['cam03'])

def test_json_read_back_and_rerender(tmp_path):
    spec = SceneSpec(seed=1, num_frames=9, height=32, width=48)
    path = write_scene(tmp_path, 'f24_aperture5', 'scene7', spec)
    read = load_camera_extrinsics(path / 'cameras' / 'camera_extrinsics.json')
    poses = camera_poses(spec)
    assert list(read) == list(poses)
    assert max(float((read[n] - poses[n]).abs().max()) for n in poses) < 1e-5            # metres
    frames = [0, 4, 8]
    c2w = torch.stack([read[n][frames] for n in read])
    rerender = render_cameras(make_scene(spec), c2w, spec.intrinsics, 32, 48, spec.times[frames])
    decoded = torch.stack([read_video(path / 'videos' / f'{n}.mp4')[frames] for n in read])
    assert psnr(luma(rerender), luma(decoded)) > 35        # about 38 dB: H.264 at crf 18
    assert psnr(rerender, decoded) > 24                    # about 27 dB in RGB: yuv420p halves the chroma resolution
    assert psnr(rerender, decoded.roll(1, 0)) < psnr(rerender, decoded) - 5              # another camera does not fit

def test_cameras_meet_at_base_frame():
    spec = SceneSpec(seed=6, num_frames=81, height=16, width=32, random_cameras=2)
    poses = camera_poses(spec)
    assert list(poses)[-2:] == ['cam11', 'cam12']
    base = base_pose(spec)
    for i in range(1, 11): torch.testing.assert_close(poses[f'cam{i:02d}'][40], base, atol=1e-5, rtol=0)
    assert (poses['cam01'][0] - poses['cam02'][0]).abs().max() > 0.1                   # pan right / left start apart
    rel = rigid_inverse(base) @ poses['cam05'][80]                                      # dolly in: about 1 m forward
    assert rel[2, 3] == pytest.approx(0.99, abs=0.02)

def test_determinism_per_seed():
    spec = SceneSpec(seed=12, **TINY)
    a = render_scene(spec)['frames']
    syn.clear_caches()                                         # not just the cache answering twice
    b = render_scene(SceneSpec(seed=12, **TINY))['frames']
    assert a.shape == (10, 5, 3, 16, 32) and torch.equal(a, b)
    assert not torch.equal(a, render_scene(SceneSpec(seed=13, **TINY))['frames'])
    assert scene_caption(spec) == scene_caption(SceneSpec(seed=12, **TINY))

def test_moving_objects_move_and_sky_is_still():
    spec = SceneSpec(seed=2, num_frames=81, height=32, width=48, num_moving=2)
    scene = make_scene(spec)
    c2w = base_pose(spec).expand(1, 2, 4, 4)                  # a still camera at two times
    ims, dep = render_cameras(scene, c2w, spec.intrinsics, 32, 48, torch.tensor([0., 5.]), depth=True)
    assert dep.shape == (1, 2, 1, 32, 48)
    sky = dep[0, 0, 0].isinf() & dep[0, 1, 0].isinf()
    assert sky.any() and torch.equal(ims[0, 0][:, sky], ims[0, 1][:, sky])            # infinity does not move
    assert (ims[0, 0] - ims[0, 1]).abs().amax(0).gt(0.1).sum() > 10                   # but the objects do

def test_refuses_overwrite_unless_asked(tmp_path):
    spec = SceneSpec(seed=0, **TINY)
    path = write_scene(tmp_path, None, 'scene1', spec)
    before = snapshot(path)
    with pytest.raises(InfcamError, match='already exists'): write_scene(tmp_path, None, 'scene1', spec)
    assert snapshot(path) == before
    write_scene(tmp_path, None, 'scene1', SceneSpec(seed=1, **TINY), overwrite=True)
    assert json.loads((path / 'scene.json').read_text())['spec']['seed'] == 1
    assert [p.name for p in path.parent.iterdir()] == ['scene1']                       # the old copy is gone
    # a dataset asked for other settings than the ones on disk is refused, not silently mixed
    make_dataset(tmp_path / 'ds', 1, progress=False, **TINY)
    with pytest.raises(InfcamError, match='num_frames 5 -> 9'):
        make_dataset(tmp_path / 'ds', 1, progress=False, num_frames=9, height=16, width=32)
    with pytest.raises(InfcamError, match='50 mm'): write_scene(tmp_path, 'f50_aperture2.4', 'scene2', spec)
    with pytest.raises(InfcamError, match='scene name'): write_scene(tmp_path, None, '../x', spec)

def test_resume_skips_complete_and_redoes_partial(tmp_path):
    root = tmp_path / 'mcv'
    paths = make_dataset(root, 3, progress=False, **TINY)
    setting = root / 'f24_aperture5'
    keep = snapshot(paths[0])
    # scene2: killed while being written for the first time (only its temporary folder exists)
    os.replace(paths[1], setting / '.scene2.tmp-deadbeef')
    (setting / '.scene2.tmp-deadbeef' / 'videos' / 'cam09.mp4').unlink()
    # scene3: a folder that lost videos
    (paths[2] / 'videos' / 'cam04.mp4').unlink()
    assert scene_complete(paths[0]) and not scene_complete(paths[2])
    (root / 'metadata.csv').unlink()
    again = make_dataset(root, 3, progress=False, **TINY)
    assert again == paths
    assert snapshot(paths[0]) == keep                                                   # complete: skipped, untouched
    assert all(scene_complete(p) for p in paths)
    assert sorted(p.name for p in setting.iterdir()) == ['scene1', 'scene2', 'scene3']  # temporary folder removed
    assert len(list(csv.reader(open(root / 'metadata.csv')))) == 1 + 30

def test_killed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt
        return real(*a, **k)
    real = syn.write_video
    monkeypatch.setattr(syn, 'write_video', boom)
    with pytest.raises(KeyboardInterrupt): write_scene(tmp_path, None, 'scene1', SceneSpec(seed=0, **TINY))
    assert list((tmp_path / 'f24_aperture5').iterdir()) == []

def test_scene_pair_is_the_training_pair(tmp_path):
    spec = SceneSpec(seed=8, **TINY)
    path = synth(tmp_path, scenes=1, seed=8, frames=5, height=16, width=32, progress=False)[0]
    pair = scene_pair(path, 'cam02', 'cam07')
    poses = camera_poses(spec)
    assert pair['source'].shape == pair['target'].shape == (5, 3, 16, 32)
    torch.testing.assert_close(pair['c2w'], torch.linalg.inv(poses['cam02'][0]) @ poses['cam07'], atol=1e-4, rtol=0)
    assert pair['caption'] == scene_caption(spec)
    with pytest.raises(InfcamError, match='cam11'): scene_pair(path, 'cam01', 'cam11')

def test_bad_inputs():
    with pytest.raises(InfcamError, match='4k\\+1'): SceneSpec(num_frames=10)
    with pytest.raises(InfcamError, match='multiple of 16'): SceneSpec(width=100)
    with pytest.raises(InfcamError, match='focal_mm'): SceneSpec(focal_mm=0)
    with pytest.raises(InfcamError, match='kind'): SceneSpec(kind='forest')
    scene = make_scene(SceneSpec(seed=0, **TINY))
    with pytest.raises(InfcamError, match=r'\(C, F, 4, 4\)'): render_cameras(scene, torch.eye(4), torch.ones(4), 16, 32)
    with pytest.raises(InfcamError, match='one time per frame'):
        render_cameras(scene, torch.eye(4).expand(2, 3, 4, 4), torch.ones(4), 16, 32, t=torch.zeros(2))
    with pytest.raises(InfcamError, match='not a complete scene'): load_scene('/nonexistent/scene1')


def test_metadata_rebuild_keeps_augmented_captions(tmp_path):
    "Adding scenes rewrites metadata.csv; captions of augmented copies (which have no scene.json) must survive."
    import csv
    from infcam.synthetic import make_dataset
    from infcam.augment import augment
    kw = dict(num_frames=9, height=32, width=48, progress=False)
    make_dataset(tmp_path, 1, **kw)
    augment(tmp_path, tmp_path, focal_targets=[35], trajectory=None, workers=1, progress=False)
    read = lambda: {r['file_name']: r['text'] for r in csv.DictReader(open(tmp_path / 'metadata.csv'))}
    aug = {k: v for k, v in read().items() if '_aug/' in k}
    assert len(aug) == 10 and all(aug.values())
    make_dataset(tmp_path, 2, **kw)                       # a second scene: metadata.csv is rebuilt
    rows = read()
    assert {k: rows[k] for k in aug} == aug
    assert sum('scene2/' in k for k in rows) == 10

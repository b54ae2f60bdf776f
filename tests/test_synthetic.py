"""infcam.synthetic beyond the examples of nbs/20_synthetic.ipynb (which nbdev_test runs): the scene folder's files,
captions and depth, the dolly preset's distance, rendered determinism after clearing the caches, the still sky,
overwrite, a killed write, and errors. 20 already asserts the folder layout, the camera file read back and re-rendered
against the decoded videos, the cameras meeting at frame 40, resume and the settings check; those are checked there
only."""
import csv, json, os
from pathlib import Path
import pytest
import torch
from infcam.core import InfcamError
from infcam.cameras import rigid_inverse
import infcam.synthetic as syn
from infcam.synthetic import (SceneSpec, camera_poses, base_pose, make_scene, render_cameras, render_scene, write_scene,
                              load_scene, scene_pair, make_dataset, synth, scene_caption)
from infcam.layout import scene_complete

TINY = dict(num_frames=5, height=16, width=32)          # 10 cameras x 5 frames: a fraction of a second
CAMS = [f'cam{i:02d}.mp4' for i in range(1, 11)]

def snapshot(folder: Path):
    "Every file under folder with its inode and modification time, to show it was left untouched."
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob('*') if p.is_file()}

def test_scene_folder_files(tmp_path):
    "The files of a scene folder (20 checks its path, video names, completeness and one video's size and rate)."
    spec = SceneSpec(seed=3, **TINY)
    path = write_scene(tmp_path, None, 'scene1', spec)
    assert sorted(p.name for p in path.iterdir()) == ['cameras', 'scene.json', 'videos']
    data = json.loads((path / 'cameras' / 'camera_extrinsics.json').read_text())
    assert list(data) == [f'frame{i}' for i in range(5)] and list(data['frame0']) == [c[:-4] for c in CAMS]
    assert data['frame0']['cam01'].count('[') == 4 and data['frame0']['cam01'].endswith('] ')
    meta = json.loads((path / 'scene.json').read_text())
    assert SceneSpec.from_dict(meta['spec']) == spec and meta['caption'] == scene_caption(spec)
    assert meta['cameras']['cam09'] == 'arc_left'

def test_dataset_metadata_and_depth(tmp_path):
    "Captions and seeds per scene, depth files, the world shared across lenses (20 checks the paths and the csv layout)."
    paths = make_dataset(tmp_path, 2, seed=4, focal_mms=(24, 50), progress=False, save_depth=True, **TINY)
    rows = list(csv.reader(open(tmp_path / 'metadata.csv', newline='')))
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

def test_dolly_in_camera_moves_a_metre():
    "(20 checks the camera names and that all ten meet at frame 40.)"
    spec = SceneSpec(seed=6, num_frames=81, height=16, width=32)
    poses = camera_poses(spec)
    base = base_pose(spec)
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
    "Nothing touched when refused, replaced when asked (20 checks the 'already exists' and setting-name messages)."
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
    "(20 checks 4k+1 frames, sizes that are not multiples of 16, and an unknown kind.)"
    with pytest.raises(InfcamError, match='focal_mm'): SceneSpec(focal_mm=0)
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

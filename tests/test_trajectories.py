"""Keyframe trajectories beyond the examples of nbs/04_trajectories.ipynb (which nbdev_test runs): interpolation through
keyframes and its smoothness, every validation message (also from a file), round trips in every format, and
load_trajectory's spellings. 04 already asserts that orbit_left.yaml stays on its circle looking at its centre and
that dolly_zoom.yaml keeps a subject's size; those are checked there only."""
import json
from pathlib import Path
import pytest, torch
from infcam.core import InfcamError
from infcam.cameras import preset, rotation_to_ypr, ypr_to_rotation, relative_poses, save_camera_extrinsics, pose_matrix
from infcam.trajectories import Trajectory, Keyframe, load_trajectory

DATA = Path(__file__).resolve().parents[1] / 'data' / 'trajectories'
ORBIT = DATA / 'orbit_left.yaml'
SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'sample_data'
TEN_TYPES = SHARED / 'cameras' / 'camera_extrinsics_10types.json'

def ypr(c2w): return rotation_to_ypr(c2w[..., :3, :3].double())

def example():
    return Trajectory([Keyframe(0., focal_mm=24), Keyframe(0.2, yaw=10, pitch=-3, roll=2, translation=(0.1, 0., 0.05)),
                       Keyframe(0.55, yaw=25, pitch=4, translation=(0.4, -0.1, 0.3), zoom=1.3),
                       Keyframe(1., yaw=-5, pitch=0, roll=-4, translation=(0.2, 0.05, 0.8), focal_mm=40)], frames=81, name='ex')

# ---- the shipped example files -----------------------------------------------------------------------------------------
def test_orbit_left_example():
    "Its header, start, yaw and monotone turn (04 checks that it stays on the circle looking at its centre)."
    traj = Trajectory.load(ORBIT)
    assert traj.frames == 81 and traj.name == 'orbit_left' and len(traj.keyframes) == 5
    c2w = traj.sample()
    assert c2w.shape == (81, 4, 4) and c2w.dtype == torch.float32
    assert torch.allclose(c2w[0], torch.eye(4), atol=1e-6)                     # starts at the source camera
    y = ypr(c2w)
    assert abs(y[-1, 0] - 30) < 1e-4 and y[:, 1:].abs().max() < 1e-6             # 30 deg of yaw, no pitch or roll
    assert (y[1:, 0] - y[:-1, 0]).min() > 0                                       # monotone
    assert torch.equal(load_trajectory(ORBIT), c2w) and torch.equal(load_trajectory(str(ORBIT), None), c2w)

def test_dolly_zoom_example_moves_evenly():
    "(04 checks its end points and the constant subject size.)"
    c2w, z = load_trajectory(DATA / 'dolly_zoom.yaml', 41, with_zoom=True)
    assert torch.allclose(c2w[:, 2, 3], torch.linspace(0, 1, 41), atol=1e-6)

# ---- interpolation -------------------------------------------------------------------------------------------------------
def test_passes_through_keyframes_at_any_frame_count():
    traj = example()
    for n in (21, 81, 101):          # keyframe times 0, 0.2, 0.55, 1 land on frames of these clips? 0.2*(n-1), 0.55*(n-1)
        c2w = traj.sample(n)
        for k in traj.keyframes:
            i = k.t * (n - 1)
            if abs(i - round(i)) > 1e-9: continue
            R = ypr_to_rotation(*(torch.tensor(v, dtype=torch.float64) for v in (k.yaw, k.pitch, k.roll))).float()
            assert torch.allclose(c2w[round(i), :3, :3], R, atol=1e-6), (n, k.t)
            assert torch.allclose(c2w[round(i), :3, 3], torch.tensor(k.translation, dtype=torch.float32), atol=1e-6)

def test_two_keyframes_are_slerp_and_a_straight_line():
    traj = Trajectory([Keyframe(0., yaw=-10, pitch=5), Keyframe(1., yaw=30, pitch=5, translation=(1., -0.5, 2.))])
    c2w = traj.sample(41)
    R0, R1 = c2w[0, :3, :3].double(), c2w[-1, :3, :3].double()
    ang = lambda A, B: torch.rad2deg(torch.arccos(((torch.einsum('...ij,...ij', A, B) - 1) / 2).clamp(-1, 1)))
    a = ang(R0.expand(41, 3, 3), c2w[:, :3, :3].double())
    assert torch.allclose(a, ang(R0, R1) * torch.linspace(0, 1, 41, dtype=torch.float64), atol=2e-3)   # constant angular speed
    assert torch.allclose(c2w[:, :3, 3], torch.linspace(0, 1, 41)[:, None] * torch.tensor([1., -0.5, 2.]), atol=1e-6)

def test_interpolation_is_smooth():
    c2w = example().sample(401).double()
    # translation: velocity continuous (no kink at keyframes), second differences small everywhere
    v = c2w[1:, :3, 3] - c2w[:-1, :3, 3]
    assert (v[1:] - v[:-1]).norm(dim=-1).max() < 5e-4
    # rotation: the relative rotation between neighbouring frames changes gradually
    step = c2w[:-1, :3, :3].transpose(1, 2) @ c2w[1:, :3, :3]
    w = torch.stack([step[:, 2, 1] - step[:, 1, 2], step[:, 0, 2] - step[:, 2, 0], step[:, 1, 0] - step[:, 0, 1]], -1) / 2
    assert (w[1:] - w[:-1]).norm(dim=-1).max() < 5e-4 and w.norm(dim=-1).max() < 0.01

def test_zoom_and_focal_interpolation():
    traj = example()                                # focal_mm 24 at t=0, zoom 1.3 at 0.55, focal_mm 40 at 1
    z = traj.zoom(21)
    assert z.shape == (21,) and abs(z[0] - 1) < 1e-6 and abs(z[11] - 1.3) < 1e-6 and abs(z[-1] - 40 / 24) < 1e-6
    assert abs(z[4] - (1 + 0.3 * 4 / 11)) < 1e-5                                  # linear in between (key at 0.2 has no lens)
    assert torch.allclose(traj.focal_mm(21), z * 24)
    assert torch.allclose(traj.zoom(21, source_focal_mm=48)[-1], torch.tensor(40 / 48))
    assert torch.equal(Trajectory([Keyframe(0.), Keyframe(1., yaw=3)]).zoom(9), torch.ones(9))
    with pytest.raises(InfcamError, match='source_focal_mm'): traj.zoom(9, source_focal_mm=0)

# ---- round trips ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('ext', ['.yaml', '.yml', '.json'])
def test_save_load_sample_round_trip(tmp_path, ext):
    traj = example()
    traj.keyframes[2] = Keyframe(0.55, rotation=ypr_to_rotation(torch.tensor(25., dtype=torch.float64), torch.tensor(4., dtype=torch.float64)).tolist(),
                                 translation=(0.4, -0.1, 0.3), zoom=1.3)
    traj = Trajectory(traj.keyframes, frames=41, name='rt')
    p = traj.save(tmp_path / f'traj{ext}')
    assert p.read_text().splitlines()[0 if ext != '.json' else 1].startswith('# infcam trajectory v1' if ext != '.json' else '  "version": 1')
    back = Trajectory.load(p)
    assert back.to_dict() == traj.to_dict() and back.frames == 41
    for n in (41, 81, 13): assert torch.equal(back.sample(n), traj.sample(n)) and torch.equal(back.zoom(n), traj.zoom(n))
    assert not [q for q in tmp_path.iterdir() if q.name.startswith('.')]     # atomic: no temporary files left
    with pytest.raises(InfcamError, match='already exists'): traj.save(p, overwrite=False)

def test_from_c2w_reproduces_poses():
    sampled = example().sample(81)
    assert torch.allclose(Trajectory.from_c2w(sampled).sample(81), sampled, atol=1e-6)       # keyframe per frame: exact
    t = Trajectory.from_c2w(sampled, every=4)
    assert len(t.keyframes) == 21 and t.frames == 81
    assert (t.sample(81) - sampled).abs().max() < 1e-3                                         # spline in between
    for name in ('arc_right', 'translate_down', 'tilt_up'):
        P = preset(name, full=True)
        assert torch.allclose(Trajectory.from_c2w(P).sample(81), P, atol=1e-6)
        assert (Trajectory.from_c2w(P, every=8).sample(81) - P).abs().max() < 1e-4
    # a pose looking straight down (gimbal lock for yaw/pitch/roll) is kept exactly as a matrix
    R = ypr_to_rotation(torch.tensor([0., 30.]), torch.tensor([0., -90.]), torch.tensor([0., 20.]))
    P = pose_matrix(R, torch.zeros(2, 3))
    assert torch.allclose(Trajectory.from_c2w(P).sample(2), P, atol=1e-6)
    with pytest.raises(InfcamError, match='not a rotation'): Trajectory.from_c2w(P * 2)
    with pytest.raises(InfcamError, match='at least 2 poses'): Trajectory.from_c2w(P[:1])

def test_zoom_survives_from_c2w_and_files(tmp_path):
    P = preset('zoom_in', 9, full=True)
    t = Trajectory.from_c2w(P, zoom=torch.linspace(1, 2, 9))
    assert torch.allclose(t.zoom(9), torch.linspace(1, 2, 9)) and t.frames == 9
    assert torch.equal(Trajectory.load(t.save(tmp_path / 'z.json')).zoom(17), t.zoom(17))

# ---- validation ----------------------------------------------------------------------------------------------------------
K0 = {'t': 0}
@pytest.mark.parametrize('data,msg', [
    ({'keyframes': [K0, {'t': 1, 'yaww': 3}]}, "keyframes[1]: unknown key 'yaww' (allowed: t, yaw, pitch, roll, rotation, translation, focal_mm, zoom)"),
    ({'keyframes': [K0, {'t': 1}], 'speed': 2}, "unknown key 'speed' (allowed: version, name, description, frames, keyframes)"),
    ({'keyframes': [K0]}, 'at least 2 keyframes, got 1'),
    ({'keyframes': []}, 'at least 2 keyframes, got 0'),
    ({'frames': 81}, "missing 'keyframes'"),
    ({'keyframes': {'t': 0}}, "'keyframes' must be a list"),
    ({'keyframes': [K0, {'t': 0.5}, {'t': 0.4}]}, 'keyframes[2].t = 0.4 does not follow keyframes[1].t = 0.5'),
    ({'keyframes': [K0, {'t': 0}]}, 'times must increase'),
    ({'keyframes': [{'t': -0.1}, {'t': 1}]}, 'keyframes[0].t = -0.1 is outside [0, 1]'),
    ({'keyframes': [K0, {'t': 1, 'yaw': float('nan')}]}, 'keyframes[1].yaw is nan'),
    ({'keyframes': [K0, {'t': float('inf')}]}, 'keyframes[1].t is inf'),
    ({'keyframes': [K0, {'t': 1, 'translation': [0, 0, float('-inf')]}]}, 'keyframes[1].translation[2] is -inf'),
    ({'keyframes': [K0, {'t': 1, 'translation': 'up'}]}, 'keyframes[1].translation must be a list of 3 numbers'),
    ({'keyframes': [K0, {'t': 1, 'roll': True}]}, 'keyframes[1].roll must be a number, got True'),
    ({'keyframes': [K0, {'t': 1, 'focal_mm': -24}]}, 'keyframes[1].focal_mm must be a number from 1 mm to 1000 mm, got -24'),
    ({'keyframes': [K0, {'t': 1, 'zoom': 0}]}, 'keyframes[1].zoom must be a number from 0.02 to 50, got 0'),
    ({'keyframes': [K0, {'t': 1, 'zoom': 2, 'focal_mm': 30}]}, 'not both'),
    ({'keyframes': [K0, {'t': 1, 'rotation': [[1, 0, 0], [0, 1.01, 0], [0, 0, 1]]}]}, 'keyframes[1].rotation is not orthonormal: max |R^T R - I| = 0.0201'),
    ({'keyframes': [K0, {'t': 1, 'rotation': [[1, 0, 0], [0, 1, 0], [0, 0, -1]]}]}, 'reflection'),
    ({'keyframes': [K0, {'t': 1, 'rotation': [[1, 0, 0], [0, 1, 0]]}]}, '3x3 matrix'),
    ({'keyframes': [K0, {'t': 1, 'rotation': [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 'yaw': 5}]}, 'either rotation or yaw/pitch/roll'),
    ({'keyframes': [K0, {'yaw': 5}]}, "keyframes[1]: missing 't'"),
    ({'keyframes': [K0, [1, 2]]}, 'keyframes[1] must be a mapping'),
    ({'keyframes': [K0, {'t': 1}], 'frames': 50}, '4k+1'),
    ({'keyframes': [K0, {'t': 1}], 'version': 2}, 'unsupported trajectory version 2'),
    ({'frame0': {'cam01': '[..]'}}, 'MultiCamVideo camera file'),
    ([1, 2], "a trajectory must be a mapping"),
])
def test_validation_messages(tmp_path, data, msg):
    with pytest.raises(InfcamError) as e: Trajectory.from_dict(data)
    assert msg in str(e.value) and '\n' not in str(e.value), str(e.value)
    p = tmp_path / 'my_traj.json'; p.write_text(json.dumps(data))       # from a file, the message also names the file
    with pytest.raises(InfcamError) as e: Trajectory.load(p)
    assert str(e.value).startswith(str(p)) and msg in str(e.value)

def test_file_errors(tmp_path):
    with pytest.raises(InfcamError, match="unsupported trajectory file extension '.txt'"): Trajectory.load(tmp_path / 'a.txt')
    with pytest.raises(InfcamError, match='cannot read trajectory file .*missing.yaml'): Trajectory.load(tmp_path / 'missing.yaml')
    (tmp_path / 'bad.yaml').write_text('keyframes: [\n  {t: 0\n')
    with pytest.raises(InfcamError, match='bad.yaml is not valid YAML'): Trajectory.load(tmp_path / 'bad.yaml')
    (tmp_path / 'bad.json').write_text('{"keyframes": [')
    with pytest.raises(InfcamError, match='bad.json is not valid JSON'): Trajectory.load(tmp_path / 'bad.json')
    (tmp_path / 'bin.yaml').write_bytes(b'\xff\xfe\x00bad')
    with pytest.raises(InfcamError, match='bin.yaml'): Trajectory.load(tmp_path / 'bin.yaml')
    (tmp_path / 'nan.yaml').write_text('keyframes:\n  - {t: 0}\n  - {t: 1, pitch: .nan}\n')
    with pytest.raises(InfcamError, match='nan.yaml: keyframes\\[1\\].pitch is nan'): Trajectory.load(tmp_path / 'nan.yaml')
    with pytest.raises(InfcamError, match='extension'): example().save(tmp_path / 'x.yaml.bak')

# ---- load_trajectory -----------------------------------------------------------------------------------------------------
def test_load_trajectory_presets():
    for spec in (3, '3', 'cam03', 'tilt_up'): assert torch.equal(load_trajectory(spec), preset(3, full=True))
    assert torch.equal(load_trajectory('arc_left', 41), preset(9, 41, full=True))
    assert torch.equal(load_trajectory('arc_left', 41, stretch=True), preset(9, 41, full=True, stretch=True))
    c2w, z = load_trajectory('pan_left', 17, with_zoom=True)
    assert c2w.shape == (17, 4, 4) and torch.equal(z, torch.ones(17))
    for n in (0, 10, 80, 82):
        with pytest.raises(InfcamError, match='4k\\+1'): load_trajectory('pan_left', n)
    with pytest.raises(InfcamError, match="unknown trajectory 'spin_around'"): load_trajectory('spin_around')
    with pytest.raises(InfcamError, match='unknown trajectory'): load_trajectory(3.5)

def test_load_trajectory_files(tmp_path):
    p = example().save(tmp_path / 'ex.yaml')
    assert torch.equal(load_trajectory(p), example().sample(81))
    assert load_trajectory(p, 41).shape == (41, 4, 4)
    t41 = Trajectory(example().keyframes, frames=41).save(tmp_path / 'ex41.json')
    assert load_trajectory(t41, None).shape == (41, 4, 4)                         # None: the file's frame count
    with pytest.raises(InfcamError, match='4k\\+1'): load_trajectory(p, 40)
    bad = tmp_path / 'bad.yaml'; bad.write_text('keyframes:\n  - {t: 0, yaw: 0}\n')
    with pytest.raises(InfcamError, match='bad.yaml'): load_trajectory(bad, 9)
    with pytest.raises(InfcamError, match='cannot read trajectory file'): load_trajectory(tmp_path / 'nope.yaml')
    c2w, z = load_trajectory(p, 21, with_zoom=True, source_focal_mm=40)
    assert abs(z[-1] - 1) < 1e-6 and abs(z[0] - 24 / 40) < 1e-6
    assert torch.equal(load_trajectory(example(), 21), example().sample(21))     # a Trajectory object works too

def test_load_trajectory_camera_files(tmp_path):
    cams = {'cam01': preset(2, full=True), 'cam02': preset('translate_up', full=True)}
    f = save_camera_extrinsics(tmp_path / 'camera_extrinsics.json', cams)
    assert torch.equal(load_trajectory(f'{f}:cam02'), cams['cam02'])
    assert torch.equal(load_trajectory(f'{f}:cam02', 41), cams['cam02'][:41])
    rel = load_trajectory(f'{f}:cam02@cam01', 21)
    assert torch.allclose(rel, relative_poses(cams['cam01'][0], cams['cam02'][:21]), atol=1e-6)
    assert torch.allclose(load_trajectory(f'{f}:cam02', 41, stretch=True), cams['cam02'][::2], atol=1e-5)
    with pytest.raises(InfcamError, match="has no camera 'cam05' \\(it has cam01, cam02\\)"): load_trajectory(f'{f}:cam05')
    with pytest.raises(InfcamError, match='fewer than the 85'): load_trajectory(f'{f}:cam01', 85)
    with pytest.raises(InfcamError, match='FILE.json:camXX'): load_trajectory(f)

@pytest.mark.skipif(not TEN_TYPES.exists(), reason=f"reference camera file not found at {TEN_TYPES} (../shared beside the checkout)")
def test_load_trajectory_reference_camera_file():
    for i in (1, 7, 9):
        assert (load_trajectory(f'{TEN_TYPES}:cam{i:02d}') - preset(i, full=True)).abs().max() < 1e-4
        assert (load_trajectory(f'{TEN_TYPES}:cam{i:02d}', 41) - preset(i, 41, full=True)).abs().max() < 1e-4


# ---- the path designer (04 shows the convention with it; these are the cases a notebook should not hold) ------------------
CLIP = Path(__file__).resolve().parents[1] / 'data' / 'clips' / 'demo_17f.mp4'

def test_table_round_trip_of_matrices_and_focal_lengths():
    "A file with a rotation matrix and focal_mm / missing lenses becomes a table that makes the same poses and zooms."
    from infcam.trajectories import trajectory_rows, rows_trajectory
    R = ypr_to_rotation(*(torch.tensor(v, dtype=torch.float64) for v in (30., -10., 5.))).tolist()
    traj = Trajectory([Keyframe(0.), Keyframe(0.4, yaw=5, focal_mm=36),
                       Keyframe(0.7, rotation=R, translation=(0.3, 0, 0.1)), Keyframe(1., yaw=-20, zoom=0.8)])
    back = rows_trajectory(trajectory_rows(traj))
    assert torch.allclose(back.sample(33), traj.sample(33), atol=1e-6)
    assert torch.allclose(back.zoom(33), traj.zoom(33), atol=1e-6)                  # 36 mm on the 24 mm default: 1.5
    assert trajectory_rows(traj)[0]['zoom'] == 1.5                 # held before the first lens keyframe

def test_designer_widgets_without_a_browser(tmp_path):
    "The page's widgets drive the designer: an edit, add and remove buttons, save refusing to overwrite, a bad load."
    from infcam.trajectories import path_designer, load_trajectory
    view = path_designer(CLIP, path=str(tmp_path / 'p.yaml'))
    d = view.d
    view.cells[1]['roll'].value = 10.
    assert d.rows[1]['roll'] == 10. and view.cells[1]['roll'].value == 10.        # the table was rebuilt from the state
    view.add_button.click()
    assert len(d.rows) == 3 and len(view.cells) == 3
    view.table.children[-1].click()                                                # the last row's remove button
    assert [r['t'] for r in d.rows] == [0., 0.5]
    view.save_button.click()
    assert 'saved' in view.status.value and torch.equal(load_trajectory(tmp_path / 'p.yaml', 17), d.c2w)
    view.save_button.click()
    assert 'already exists; tick overwrite' in view.status.value
    view.spec.value = 'no_such_preset'; view.load_button.click()
    assert 'not a preset' in view.status.value and len(d.rows) == 2              # the table is kept
    view.cells[1]['t'].value = 0.                                                  # two keyframes at t = 0
    assert 'times must increase' in view.status.value and d.error
    shown = view.preview.value
    view.time.value = 16
    assert view.preview.value != shown and 'frame 16 (t = 1.000)' in view.coverage.value

def test_a_designed_path_is_accepted_by_preview_and_generate(tmp_path, capsys):
    "What the designer saves, `infcam preview` and `infcam generate` (the tiny model on the CPU) take."
    from infcam.trajectories import PathDesigner
    from infcam.cli import main
    from infcam.testing import make_tiny_release
    d = PathDesigner(CLIP)
    d.set(1, 'pitch', 6.); d.set(1, 'zoom', 1.3); d.add(0.25); d.set(1, 'x', 0.2)
    f = d.save(tmp_path / 'designed.yaml')
    assert main(['preview', '--video', str(CLIP), '--trajectory', str(f), '--frames', '17', '--height', '96',
                 '--width', '176', '--out', str(tmp_path / 'p.mp4')]) == 0
    w = make_tiny_release(tmp_path / 'weights')
    out = tmp_path / 'g.mp4'
    assert any('mean over the latent frames, 1.15x' in x for x in d.warnings)    # 9 frames here, 17 there: same mean
    with pytest.warns(UserWarning, match=r'zoom varies .* \(1\.150\) is used'):
        assert main(['generate', '--video', str(CLIP), '--prompt', 'a street', '--trajectory', str(f),
                     '--weights', str(w), '--out', str(out), '--size', 'tiny', '--frames', '9', '--height', '32',
                     '--width', '48', '--steps', '1', '--dtype', 'fp32', '--device', 'cpu', '--quiet']) == 0
    assert out.is_file()

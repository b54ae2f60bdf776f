"""The `infcam` command as a user runs it: a real subprocess, real files, one-line errors. The error paths after a
command's first run go through the same `main` in this process (`infcam_here`): the interpreter's start-up, not
the check, is what a subprocess would add."""
import subprocess, sys, os
from pathlib import Path
import pytest, torch
from infcam.video import video_info, write_video

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'sample_data'

def infcam(*args, cwd=None):
    return subprocess.run([sys.executable, '-c', 'import sys; from infcam.cli import main; sys.exit(main())', *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)

def infcam_here(*args):
    "`main(args)` in this process, its exit status and output as a subprocess would give them."
    import contextlib, io
    from infcam.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main(list(args))
        except SystemExit as e: rc = e.code
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())

def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('infcam: error:'), r.stderr
    assert 'Traceback' not in r.stderr
    for n in needles: assert n in lines[0], (n, lines[0])

def test_preview_defaults_on_builtin_clip(tmp_path):
    r = infcam('preview', '--frames', '17', '--height', '64', '--width', '112', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'outputs' / 'preview_demo_pan_right.mp4'
    assert video_info(out) == dict(frames=17, fps=16.0, height=64, width=2 * 112 + 4)
    before = out.read_bytes()
    r = infcam('preview', '--frames', '17', '--height', '64', '--width', '112', cwd=tmp_path)
    assert_one_line_error(r, 'already exists', '--overwrite')
    assert 'overwrite=True' not in r.stderr                 # no Python wording in a command's message
    assert out.read_bytes() == before                       # the existing result is untouched
    r = infcam('preview', '--frames', '17', '--height', '64', '--width', '112', '--trajectory', 'tilt_down', '--overwrite', cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / 'outputs' / 'preview_demo_tilt_down.mp4').exists()
    assert not list((tmp_path / 'outputs').glob('.*'))     # no temporary files left behind

def test_preview_user_clip_and_errors(tmp_path):
    clip = torch.rand(9, 3, 40, 72)
    write_video(tmp_path / 'short.mp4', clip)
    r = infcam('preview', '--video', str(tmp_path / 'short.mp4'), '--frames', '9', '--height', '32', '--width', '48',
               '--trajectory', '3', '--out', str(tmp_path / 'ok.mp4'))
    assert r.returncode == 0, r.stderr
    assert video_info(tmp_path / 'ok.mp4')['frames'] == 9
    assert_one_line_error(infcam('preview', '--video', str(tmp_path / 'short.mp4'), '--frames', '17', '--out', str(tmp_path / 'x.mp4')),
                          'too short', '9 frames')
    assert_one_line_error(infcam_here('preview', '--video', str(tmp_path / 'nope.mp4'), '--out', str(tmp_path / 'x.mp4')), 'nope.mp4')
    assert_one_line_error(infcam_here('preview', '--video', str(tmp_path / 'short.mp4'), '--frames', '9', '--height', '40',
                                      '--width', '48', '--out', str(tmp_path / 'x.mp4')), 'multiple of 16')
    assert_one_line_error(infcam_here('preview', '--frames', '10', '--out', str(tmp_path / 'x.mp4')), '10')
    bad = tmp_path / 'bad.yaml'; bad.write_text('keyframes:\n  - {t: 0, yaw: 0}\n')
    assert_one_line_error(infcam_here('preview', '--trajectory', str(bad), '--frames', '9', '--out', str(tmp_path / 'x.mp4')), 'bad.yaml')
    assert not (tmp_path / 'x.mp4').exists()

@pytest.mark.skipif(not SHARED.exists(), reason=f"sample clips not found at {SHARED} (../shared beside the checkout)")
def test_preview_real_clip(tmp_path):
    r = infcam('preview', '--video', str(SHARED / 'videos' / 'queen.mp4'), '--frames', '17', '--height', '240', '--width', '416',
               '--trajectory', 'arc_left', '--out', str(tmp_path / 'queen.mp4'))
    assert r.returncode == 0, r.stderr
    assert video_info(tmp_path / 'queen.mp4') == dict(frames=17, fps=16.0, height=240, width=2 * 416 + 4)

def test_synth_and_resume(tmp_path):
    args = ('synth', '--out', str(tmp_path / 'mcv'), '--scenes', '1', '--frames', '9', '--height', '32', '--width', '48')
    r = infcam(*args)
    assert r.returncode == 0, r.stderr
    scene = tmp_path / 'mcv' / 'f24_aperture5' / 'scene1'
    assert sorted(p.name for p in (scene / 'videos').iterdir()) == [f'cam{i:02d}.mp4' for i in range(1, 11)]
    assert (scene / 'cameras' / 'camera_extrinsics.json').exists() and (tmp_path / 'mcv' / 'metadata.csv').exists()
    before = {p: p.stat().st_mtime_ns for p in scene.rglob('*')}
    assert infcam(*args).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in scene.rglob('*')} == before      # complete scenes are skipped
    assert_one_line_error(infcam_here('synth', '--out', str(tmp_path / 'x'), '--frames', '10'), '10')

def test_weights_check_and_convert(tmp_path):
    from infcam.testing import make_tiny_release
    rel = make_tiny_release(tmp_path / 'release')
    r = infcam('weights', 'check', str(rel), '--size', 'tiny')
    assert r.returncode == 0 and 'usable' in r.stdout, (r.stdout, r.stderr)
    r = infcam_here('weights', 'check', str(rel))                            # the released shapes: tiny tensors are wrong
    assert r.returncode == 2 and 'expected' in r.stdout
    ckpt = next(rel.rglob('*.ckpt'))
    r = infcam('weights', 'convert', str(ckpt), str(tmp_path / 'out.safetensors'), '--num-heads', '4')
    assert r.returncode == 0, r.stderr
    assert_one_line_error(infcam_here('weights', 'convert', str(ckpt), str(tmp_path / 'out.safetensors'), '--num-heads', '4'),
                          'already exists')
    next(rel.rglob('Wan2.1_VAE.pth')).unlink()
    r = infcam_here('weights', 'check', str(rel), '--size', 'tiny')
    assert r.returncode == 2 and 'Wan2.1_VAE.pth' in r.stdout + r.stderr

def test_prepare_caches_and_resumes(tmp_path):
    assert infcam('synth', '--out', str(tmp_path / 'mcv'), '--scenes', '1', '--frames', '9', '--height', '32', '--width', '48').returncode == 0
    video = next((tmp_path / 'mcv').rglob('cam03.mp4'))
    video.write_bytes(b'broken')                                   # one corrupt clip
    r = infcam('prepare', str(tmp_path / 'mcv'), '--codec', 'pixel', '--frames', '9', '--quiet')
    assert r.returncode == 0, r.stderr
    cached = sorted(p.name.split('.')[0] for p in (tmp_path / 'mcv').rglob('latents/*.safetensors'))
    assert cached == [f'cam{i:02d}' for i in range(1, 11) if i != 3]
    assert 'cam03' in (tmp_path / 'mcv' / 'prepare_report.json').read_text()
    assert_one_line_error(infcam('prepare', str(tmp_path / 'mcv'), '--codec', 'pixel', '--frames', '9', '--quiet', '--strict'), 'failed')

def test_augment_resumes_and_reports(tmp_path):
    root = tmp_path / 'mcv'
    assert infcam('synth', '--out', str(root), '--scenes', '1', '--frames', '9', '--height', '32', '--width', '48').returncode == 0
    args = ('augment', str(root), str(root), '--focal', '50', '--trajectory', 'reverse', '--workers', '1', '--quiet')
    r = infcam(*args)
    assert r.returncode == 0, r.stderr
    assert '1 source scene(s) -> 2 augmented scene(s) written' in r.stdout, r.stdout
    out = root / 'f24_aperture5_aug' / 'scene1_f50'
    assert len(list((out / 'videos').glob('cam*.mp4'))) == 10 and (out / 'cameras' / 'camera_extrinsics.json').exists()
    r = infcam(*args)
    assert r.returncode == 0 and '1 source scene(s) -> 0 augmented scene(s) written, 2 already there' in r.stdout, r.stdout


def test_preview_says_when_it_cannot_show_the_trajectory(tmp_path):
    r = infcam('preview', '--frames', '9', '--height', '48', '--width', '80', '--trajectory', 'zoom_in', cwd=tmp_path)
    assert r.returncode == 0 and 'zoom_in has no rotation and no lens change' in r.stderr
    r = infcam('preview', '--frames', '9', '--height', '48', '--width', '80', '--trajectory', 'pan_left', cwd=tmp_path)
    assert r.returncode == 0 and 'no rotation' not in r.stderr

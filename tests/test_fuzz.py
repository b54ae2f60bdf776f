"""Bad input and broken files, as a careful user would try them (issue 16): each case must end in one clear line and a
non-zero exit (or an `InfcamError`), and must never do the wrong thing quietly. Bounded time, one thread."""
import shutil
from pathlib import Path

import pytest
import torch

from infcam.core import InfcamError
from infcam.generate import generate_main
# the same tiny release, clip, small settings and one-thread setup as test_generate
from test_generate import SMALL, env, weights, clip    # noqa: F401


def _generate(clip, weights, out, *extra):
    return generate_main(['generate', '--video', str(clip), '--prompt', 'a street', '--trajectory', 'arc_left',
                          '--weights', str(weights), '--out', str(out), *SMALL, *extra])


def _broken_release(weights, tmp_path, how:str) -> tuple[Path, list[str]]:
    "A copy of the tiny weights whose InfCam checkpoint is broken `how`; returns (folder, extra generate args)."
    w = tmp_path / 'weights'
    shutil.copytree(weights, w)
    ck = w / 'InfCam' / 'step35000.ckpt'
    if how == 'zero_bytes': ck.write_bytes(b'')
    elif how == 'truncated': ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    elif how == 'removed': ck.unlink()
    elif how == 'refused':                                   # a pickle that would run code: refused by weights_only
        import pickle
        class Evil:
            def __reduce__(self): return (print, ('pwned',))
        with open(ck, 'wb') as fh: pickle.dump({'x': Evil()}, fh)
    elif how == 'missing_flag': return w, ['--checkpoint', str(tmp_path / 'nope' / 'step35000.ckpt')]
    return w, []


# 16.1: never generate without camera control unless asked for
@pytest.mark.parametrize('how', ['zero_bytes', 'truncated', 'removed', 'refused', 'missing_flag'])
def test_broken_infcam_checkpoint_is_an_error(weights, clip, tmp_path, capsys, how):
    w, extra = _broken_release(weights, tmp_path, how)
    out = tmp_path / 'out' / 'x.mp4'
    assert _generate(clip, w, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'InfCam' in err[0] and ('step35000' in err[0] or 'expected' in err[0]), err
    assert 'Traceback' not in err[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())        # nothing written


def test_weights_check_does_not_call_a_base_only_folder_usable(weights, tmp_path, capsys):
    from infcam.cli import main
    w, _ = _broken_release(weights, tmp_path, 'removed')
    assert main(['weights', 'check', str(w), '--size', 'tiny']) != 0
    out = capsys.readouterr().out
    assert 'NOT usable for generation' in out and '--base-only' in out


def test_base_only_generates_when_asked(weights, clip, tmp_path):
    w, _ = _broken_release(weights, tmp_path, 'removed')
    out = tmp_path / 'out' / 'x.mp4'
    with pytest.warns(UserWarning, match='no camera control'):
        assert _generate(clip, w, out, '--base-only') == 0
    import json
    assert json.loads(out.with_suffix('.json').read_text())['settings']['base_only'] is True


def test_from_pretrained_needs_the_infcam_checkpoint(weights, tmp_path):
    from infcam.pipeline import InfCamPipeline
    from infcam.weights import WeightsSpec
    w, _ = _broken_release(weights, tmp_path, 'zero_bytes')
    with pytest.raises(InfcamError, match='InfCam'):
        InfCamPipeline.from_pretrained(w, device='cpu', dtype=torch.float32, spec=WeightsSpec.tiny(), text_dtype=torch.float32)


# ---- shared bits for the rest of issue 16 ----
import json, os, signal, subprocess, sys, time

from infcam.cli import main as cli
from infcam.train import main as train_main
from infcam.video import write_video
# test_training's one-scene dataset with its PixelCodec latents, and its clip size
from test_training import ds, F, H, W    # noqa: F401


def one_line(capsys) -> str:
    "The single stderr line of a refused command (asserting there is exactly one and no traceback)."
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.strip() and '%|' not in l]   # not progress bars
    assert len(err) == 1 and 'Traceback' not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def mcv(ds):
    "test_training's synthetic scene (5 frames, 32x48, PixelCodec latents cached): its root folder."
    return Path(ds.index.roots[0])


def train_cmd(mcv, run, *extra):
    return [str(mcv), '--run-dir', str(run), '--codec', 'pixel', '--random-text', '--num-frames', str(F),
            '--max-steps', '1', '--num-workers', '0', *extra]


# 16.2: every path from a data file stays inside the dataset
def test_prepare_never_leaves_the_dataset(tmp_path, capsys):
    outside = tmp_path / 'outside' / 'videos'
    data = tmp_path / 'clips'
    for d in (outside, data / 'videos'): d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    write_video(outside / 'x.mp4', torch.rand(F, 3, H, W, generator=g))
    write_video(data / 'videos' / 'ok.mp4', torch.rand(F, 3, H, W, generator=g))
    (data / 'metadata.csv').write_text(f"file_name,text\nok.mp4,fine\n{outside / 'x.mp4'},absolute\n"
                                       f"../outside/videos/x.mp4,dotdot\n/etc/passwd,secret\n")
    assert cli(['prepare', str(data), '--codec', 'pixel', '--frames', str(F), '--quiet']) == 0
    out = capsys.readouterr().out
    assert '1 encoded' in out and '3 unusable rows' in out
    assert not (tmp_path / 'outside' / 'latents').exists() and not list(tmp_path.glob('outside/**/*.safetensors'))
    rep = json.loads((data / 'prepare_report.json').read_text())
    assert sum('points outside' in why for _, why in rep['failed']) == 3


# 16.3: sizes and numbers are bounded before any work
@pytest.mark.parametrize('args,msg', [
    (['--height', '100000', '--width', '48'], 'larger than 4096'),
    (['--height', '0', '--width', '48'], 'height 0 must be a positive multiple of 16'),
    (['--width', '0', '--height', '32'], 'width 0 must be a positive multiple of 16'),
    (['--focal-mm', 'inf'], 'focal_mm must be a number from 1 mm to 1000 mm'),
    (['--focal-mm', '1e9'], 'focal_mm must be a number from 1 mm to 1000 mm'),
    (['--zoom', '1e-9'], 'zoom must be a number from 0.02 to 50'),
    (['--seed', str(2**70)], 'seed must be an integer from 0 to 2**63 - 1'),
    (['--memory', 'block_offload'], 'on the CPU it would change nothing'),
    (['--device', 'cuda' if not torch.cuda.is_available() else 'cuda:99'], 'cuda'),
])
def test_generate_refuses_bad_numbers(weights, clip, tmp_path, capsys, args, msg):
    small = [a for a in SMALL]
    for k in ('--height', '--width', '--device'):
        if k in args: i = small.index(k); del small[i:i + 2]
    out = tmp_path / 'o' / 'x.mp4'
    rc = generate_main(['generate', '--video', str(clip), '--prompt', 'x', '--trajectory', 'arc_left', '--weights',
                        str(weights), '--out', str(out), *small, *args])
    assert rc == 2 and msg in one_line(capsys)
    assert not out.exists()


def test_preview_and_prepare_refuse_huge_or_zero_sizes(clip, mcv, tmp_path, capsys):
    base = ['preview', '--video', str(clip), '--trajectory', 'pan_right', '--frames', '9']
    assert cli(base + ['--height', '100000', '--width', '100000', '--out', str(tmp_path / 'p.mp4')]) == 2
    assert 'larger than 4096' in one_line(capsys)
    assert cli(base + ['--height', '0', '--width', '48', '--out', str(tmp_path / 'p.mp4')]) == 2
    assert 'height 0' in one_line(capsys)
    assert cli(['prepare', str(mcv), '--codec', 'pixel', '--frames', str(F), '--height', '100000', '--width', '48', '--quiet']) == 2
    assert 'larger than 4096' in one_line(capsys)
    assert not list(mcv.glob('**/*100000x*'))


def test_keyframe_angles_are_bounded(tmp_path):
    from infcam.trajectories import load_trajectory
    p = tmp_path / 'huge.json'
    p.write_text(json.dumps({'keyframes': [{'t': 0}, {'t': 1, 'yaw': 1e308}]}))
    with pytest.raises(InfcamError, match=r'yaw is 1e\+308; it must be within'):
        load_trajectory(str(p), num_frames=9)


# 16.4: training records are truthful
def test_keep_last_zero_is_refused(mcv, tmp_path, capsys):
    assert train_main(train_cmd(mcv, tmp_path / 'r', '--keep-last', '0')) == 2
    assert 'keep_last must be an integer >= 1' in capsys.readouterr().err
    assert not list(tmp_path.glob('r/ckpt/step*'))


def test_resume_with_other_settings_is_refused(mcv, tmp_path, capsys):
    run = tmp_path / 'r'
    assert train_main(train_cmd(mcv, run, '--lr', '1e-4')) == 0
    before = (run / 'config.json').read_text()
    capsys.readouterr()
    assert train_main(train_cmd(mcv, run, '--lr', '3e-4', '--max-steps', '2')) == 2
    err = capsys.readouterr().err
    assert 'optimizer.lr 0.0001 -> 0.0003' in err and 'new run directory' in err
    assert (run / 'config.json').read_text() == before                       # the record is untouched
    assert train_main(train_cmd(mcv, run, '--lr', '1e-4', '--max-steps', '2')) == 0     # same settings, longer: fine
    out = capsys.readouterr().out
    assert 'resuming' in out and 'from step 1' in out
    assert json.loads((run / 'config.json').read_text())['max_steps'] == 2


# 16.5: a batch result cut short by a kill is finished on the next run, a user's file is not touched
def test_generate_finishes_a_result_cut_short(weights, clip, tmp_path, capsys):
    out = tmp_path / 'r' / 'x.mp4'
    assert _generate(clip, weights, out) == 0
    sbs, side = out.with_suffix('.sbs.mp4'), out.with_suffix('.json')
    side.unlink(); sbs.unlink()                                  # killed after the clip, before the rest...
    (out.parent / '.x.incomplete').touch()                        # ...while its marker was there
    assert _generate(clip, weights, out) == 0                     # no --overwrite needed
    assert side.is_file() and sbs.is_file() and not (out.parent / '.x.incomplete').exists()
    mine = tmp_path / 'mine' / 'x.mp4'; mine.parent.mkdir()
    mine.write_bytes(b'my own file')                              # not ours: no marker -> refused, not replaced
    assert _generate(clip, weights, mine) == 2 and 'already exists' in one_line(capsys)
    assert mine.read_bytes() == b'my own file'


# 16.6: augment's workers die with their parent
WORKER_SCRIPT = r'''
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
from infcam.augment import die_with_parent
if __name__ == '__main__':
    ex = cf.ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), initializer=die_with_parent, initargs=(os.getpid(),))
    futs = [ex.submit(time.sleep, 60) for _ in range(2)]
    time.sleep(3)
    print(' '.join(str(p) for p in ex._processes), flush=True)
    time.sleep(60)
'''


def _running(pid:int) -> bool:
    "Whether process `pid` exists and is not a zombie (Linux /proc)."
    try: state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError): return False
    return state != 'Z'


def test_augment_workers_die_with_their_parent(tmp_path):
    p = subprocess.Popen([sys.executable, '-c', WORKER_SCRIPT], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in p.stdout.readline().split()]
    assert len(pids) == 2 and all(_running(x) for x in pids)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(x) for x in pids): time.sleep(0.2)
    assert not any(_running(x) for x in pids)


# ---- no traceback anywhere: one line and exit 2, before any long work ----
def test_files_in_the_way(clip, weights, mcv, tmp_path, capsys):
    f = tmp_path / 'a_file'; f.write_text('x')
    cases = [
        ['preview', '--video', str(clip), '--trajectory', 'pan_right', '--frames', '9', '--height', '32', '--width', '48',
         '--out', str(f / 'p.mp4')],
        ['synth', '--out', str(f / 'ds'), '--scenes', '1', '--frames', '5', '--height', '32', '--width', '48'],
        ['synth', '--out', str(f), '--scenes', '1', '--frames', '5', '--height', '32', '--width', '48'],
        ['augment', str(mcv), str(f), '--quiet', '--workers', '0'],
        ['prepare', str(f), '--codec', 'pixel', '--frames', str(F)],
        ['weights', 'convert', str(weights / 'InfCam' / 'step35000.ckpt'), str(f / 'c.safetensors'), '--num-heads', '2'],
        ['bench', 'smoke', '--out', str(f), '--quiet'],
    ]
    for c in cases:
        assert cli(c) == 2, c
        line = one_line(capsys)
        assert str(f) in line, (c, line)
    assert _generate(clip, weights, f / 'x.mp4') == 2 and str(f) in one_line(capsys)
    assert train_main(train_cmd(mcv, f)) == 2 and 'is a file' in capsys.readouterr().err


def test_non_utf8_metadata(mcv, clip, weights, tmp_path, capsys):
    src = tmp_path / 'src'; shutil.copytree(mcv, src)
    (src / 'metadata.csv').write_bytes('file_name,text\nf24_aperture5/scene1/videos/cam01.mp4,caf\xe9\n'.encode('latin-1'))
    assert cli(['augment', str(src), str(tmp_path / 'aug'), '--quiet', '--workers', '0']) == 2
    assert 'not UTF-8' in one_line(capsys)
    batch = tmp_path / 'batch'; batch.mkdir(); shutil.copy(clip, batch / 'a.mp4')
    (batch / 'metadata.csv').write_bytes('file_name,text\na.mp4,caf\xe9\n'.encode('latin-1'))
    rc = generate_main(['generate', '--batch', str(batch), '--trajectory', 'arc_left', '--weights', str(weights),
                        '--out-dir', str(tmp_path / 'res'), *SMALL])
    assert rc == 2 and 'not UTF-8' in one_line(capsys)


@pytest.mark.parametrize('args,msg', [
    (['--batch-size', '0'], 'batch_size must be an integer >= 1'),
    (['--lr', 'nan'], 'lr must be a positive finite number'),
    (['--lr', '-1'], 'lr must be a positive finite number'),
    (['--accumulate', '0'], 'accumulate must be an integer >= 1'),
    (['--devices', '0'], 'devices must be'),
    (['--accelerator', 'gpu'] if not torch.cuda.is_available() else ['--accelerator', 'bogus'], 'accelerator'),
    (['--precision', 'bogus'], "unknown precision 'bogus'"),
    (['--num-workers', '-1'], 'num_workers must be an integer >= 0'),
])
def test_train_refuses_bad_arguments(mcv, tmp_path, capsys, args, msg):
    assert train_main(train_cmd(mcv, tmp_path / 'r', *args)) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith('infcam.train:')]
    assert len(err) == 1 and msg in err[0], err
    assert not list(tmp_path.glob('r/ckpt/step*'))


@pytest.mark.parametrize('how', ['empty', 'refused'])
def test_resume_from_a_broken_state(mcv, tmp_path, capsys, how):
    run = tmp_path / 'r'
    assert train_main(train_cmd(mcv, run)) == 0
    st = next(run.glob('ckpt/step*/state.pt'))
    if how == 'empty': st.write_bytes(b'')
    else:
        import pickle
        class Evil:
            def __reduce__(self): return (print, ('pwned',))
        with open(st, 'wb') as fh: pickle.dump({'x': Evil()}, fh)
    capsys.readouterr()
    assert train_main(train_cmd(mcv, run, '--max-steps', '2')) == 2
    err = capsys.readouterr().err
    assert 'state.pt' in err and 'Traceback' not in err and 'pwned' not in err


def test_bench_refuses_bad_settings_before_writing(tmp_path, capsys):
    out = tmp_path / 'b'
    assert cli(['bench', 'smoke', '--out', str(out), '--num-frames', '10', '--quiet']) == 2
    assert '4k+1' in one_line(capsys) and not (out / 'bench.json').exists()
    assert cli(['bench', 'smoke', '--out', str(out), '--gen-device', 'tpu', '--quiet']) == 2
    assert "'tpu' is not a device" in one_line(capsys) and not (out / 'bench.json').exists()


# ---- silent acceptance: each is reported ----
def test_prepare_reports_when_nothing_could_be_prepared(mcv, capsys):
    assert cli(['prepare', str(mcv), '--codec', 'pixel', '--frames', '81', '--quiet']) == 2
    assert 'no clip under' in one_line(capsys)
    assert cli(['prepare', str(mcv), '--codec', 'pixel', '--frames', str(F), '--device', 'tpu9']) == 2
    assert "'tpu9' is not a device" in one_line(capsys)


@pytest.mark.parametrize('focal,msg', [('0', 'focal target 0.0'), ('nan', 'focal target nan'),
                                       ('10', 'not longer than any scene')])
def test_augment_refuses_useless_focals(mcv, tmp_path, capsys, focal, msg):
    assert cli(['augment', str(mcv), str(tmp_path / 'aug'), '--focal', focal, '--quiet', '--workers', '0']) == 2
    assert msg in one_line(capsys)


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'missing', 'no_video'])
def test_augment_reports_incomplete_scenes(mcv, tmp_path, capsys, damage):
    src = tmp_path / 'src'; shutil.copytree(mcv, src)
    bad = src / 'f24_aperture5' / 'scene2'; shutil.copytree(src / 'f24_aperture5' / 'scene1', bad)
    cam = bad / 'cameras' / 'camera_extrinsics.json'
    if damage == 'truncated': cam.write_text(cam.read_text()[:50])
    elif damage == 'empty': cam.write_text('')
    elif damage == 'missing': cam.unlink()
    else: (bad / 'videos' / 'cam03.mp4').unlink()
    rc = cli(['augment', str(src), str(tmp_path / 'aug'), '--no-focal', '--trajectory', 'reverse', '--quiet', '--workers', '0'])
    out = capsys.readouterr()
    assert rc == 2 and 'f24_aperture5/scene2: incomplete scene' in out.out
    assert 'cam03.mp4' in out.out if damage == 'no_video' else 'camera file' in out.out


def test_out_equal_to_video_is_refused_even_with_overwrite(clip, weights, tmp_path, capsys):
    src = tmp_path / 'src.mp4'; shutil.copy(clip, src)
    before = src.read_bytes()
    assert _generate(src, weights, src, '--overwrite') == 2 and 'source video' in one_line(capsys)
    assert cli(['preview', '--video', str(src), '--trajectory', 'pan_right', '--frames', '9', '--height', '32',
                '--width', '48', '--out', str(src), '--overwrite']) == 2 and 'source video' in one_line(capsys)
    assert src.read_bytes() == before


def test_library_messages_are_said_in_words(clip, weights, tmp_path, capsys):
    bad = tmp_path / 'bad.mp4'; bad.write_bytes(b'not a video at all')
    assert _generate(bad, weights, tmp_path / 'o.mp4') == 2
    line = one_line(capsys)
    assert 'not a video file' in line and 'Errno' not in line


def test_inference_notebook_does_not_overwrite_by_default():
    nb = json.loads((Path(__file__).resolve().parents[1] / 'nbs' / 'inference.ipynb').read_text())
    params = next(''.join(c['source']) for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
    assert 'overwrite = False' in params


# ---- concurrency and leftovers ----
HOLD = "import sys, time\nfrom infcam.core import folder_lock\nwith folder_lock(sys.argv[1], 'training'):\n    print('held', flush=True); time.sleep(60)\n"


def test_a_second_run_in_one_folder_is_refused(mcv, tmp_path, capsys):
    run = tmp_path / 'r'
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'
        assert train_main(train_cmd(mcv, run)) == 2
        assert 'is in use by another infcam training' in capsys.readouterr().err
        assert cli(['prepare', str(run), '--codec', 'pixel', '--frames', str(F)]) == 2
        assert f'process {p.pid}' in one_line(capsys)
    finally:
        p.kill(); p.wait()
    assert train_main(train_cmd(mcv, run)) == 0                    # the killed holder's lock is stale: taken over
    assert not (run / '.infcam.lock').exists()


def test_leftover_temporaries_are_cleaned(clip, tmp_path):
    out = tmp_path / 'p'; out.mkdir()
    stale = out / '.x.99999999.abcdefgh.tmp.mp4'; stale.write_bytes(b'half a video')
    assert cli(['preview', '--video', str(clip), '--trajectory', 'pan_right', '--frames', '9', '--height', '32',
                '--width', '48', '--out', str(out / 'x.mp4')]) == 0
    assert not stale.exists() and sorted(p.name for p in out.iterdir()) == ['x.mp4']
    code = "from infcam.vae import wan_vae_config_dir; print(wan_vae_config_dir())"
    env = {**os.environ, 'INFCAM_CACHE': str(tmp_path / 'cache'), 'TMPDIR': str(tmp_path / 'tmp')}
    (tmp_path / 'tmp').mkdir()
    run = lambda: Path(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, env=env).stdout.strip())
    d = run()                               # the VAE's config folder: one per config, in the cache, shared by every process
    assert d.parent == tmp_path / 'cache' / 'vae_config' and (d / 'config.json').is_file() and run() == d
    assert not list((tmp_path / 'tmp').iterdir())                                # nothing left in TMPDIR


def test_latents_follow_the_umask(mcv):
    umask = os.umask(0); os.umask(umask)
    files = list(mcv.glob('**/latents/*.safetensors'))
    assert files and all(f.stat().st_mode & 0o777 == 0o666 & ~umask for f in files)


def test_a_refused_write_is_one_line(clip, tmp_path, capsys, monkeypatch):
    "A read-only folder (simulated: the tests may run as root, who may write anywhere) ends in one line naming the file."
    import infcam.core
    def refuse(src, dst): raise PermissionError(13, 'Permission denied', str(dst))
    monkeypatch.setattr(infcam.core.os, 'replace', refuse)
    out = tmp_path / 'ro' / 'p.mp4'
    assert cli(['preview', '--video', str(clip), '--trajectory', 'pan_right', '--frames', '9', '--height', '32',
                '--width', '48', '--out', str(out)]) == 2
    assert one_line(capsys) == f"infcam: error: {out}: Permission denied"
    assert not out.exists() and not list(out.parent.glob('.*tmp*'))    # and no temporary left behind


# ---- issue 30: accepted although it cannot work ----
@pytest.mark.parametrize('value', ['nan', 'inf'])
def test_non_finite_infcam_weights_are_refused_everywhere(weights, clip, tmp_path, capsys, value):
    "A checkpoint with one NaN/inf has the right names and shapes: check, generate and convert must still refuse it."
    w, _ = _broken_release(weights, tmp_path, 'none')
    ck = w / 'InfCam' / 'step35000.ckpt'
    sd = torch.load(ck, weights_only=True)
    name = next(k for k, v in sd.items() if v.is_floating_point())
    sd[name].view(-1)[0] = float(value)
    torch.save(sd, ck)
    assert cli(['weights', 'check', str(w), '--size', 'tiny']) != 0
    out = capsys.readouterr().out
    assert 'NOT usable for generation' in out and f'NaN or infinite values in {name}' in out
    video = tmp_path / 'out' / 'x.mp4'
    assert _generate(clip, w, video) == 2
    assert 'NaN or infinite' in one_line(capsys) and not video.exists()
    assert cli(['weights', 'convert', str(ck), str(tmp_path / 'c.safetensors')]) == 2
    assert 'NaN or infinite' in one_line(capsys) and not (tmp_path / 'c.safetensors').exists()


def test_prepare_never_follows_a_link_out_of_the_dataset(mcv, tmp_path, capsys):
    "A scene folder, or a scene's latents/ folder, that is a symbolic link out of the root: skipped, reported, nothing written."
    data, outside = tmp_path / 'data', tmp_path / 'outside'
    shutil.copytree(mcv, data, ignore=shutil.ignore_patterns('latents', 'text', 'prepare_report.json', '.infcam.lock'))
    setting = next(p for p in data.iterdir() if p.is_dir())
    scene = next(p for p in setting.iterdir() if p.is_dir())
    shutil.copytree(scene, outside / 'scene_x')
    (setting / 'scene_x').symlink_to(outside / 'scene_x')                   # a whole scene folder linked in
    (outside / 'latents').mkdir()
    (scene / 'latents').symlink_to(outside / 'latents')                     # a latents folder linked out
    assert cli(['prepare', str(data), '--codec', 'pixel', '--frames', str(F), '--quiet']) == 2
    assert 'could be prepared' in one_line(capsys)
    assert not list(outside.rglob('*.safetensors'))
    failed = json.loads((data / 'prepare_report.json').read_text())['failed']
    assert any('a symbolic link out of' in why and 'scene_x' in p for p, why in failed), failed
    assert any('latents folder is a symbolic link out of' in why for _, why in failed), failed


def test_one_data_root_given_twice_is_refused(mcv, tmp_path, capsys):
    alias = tmp_path / 'alias'
    alias.symlink_to(mcv)
    for roots in ([str(mcv), str(mcv)], [str(mcv), str(alias)]):
        assert train_main([roots[0], roots[1], *train_cmd(mcv, tmp_path / 'run')[1:]]) == 2
        assert 'give each root once' in one_line(capsys)
        assert not (tmp_path / 'run').exists()


def test_a_full_disk_during_prepare_is_one_line(mcv, tmp_path, capsys, monkeypatch):
    "safetensors reports a full disk as its own SafetensorError: one line naming the file, no half-written file left."
    import safetensors, safetensors.torch
    data = tmp_path / 'data'
    shutil.copytree(mcv, data, ignore=shutil.ignore_patterns('latents', 'text', 'prepare_report.json', '.infcam.lock'))
    def full(*a, **k):
        Path(a[1]).write_bytes(b'half')
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')
    monkeypatch.setattr(safetensors.torch, 'save_file', full)
    assert cli(['prepare', str(data), '--codec', 'pixel', '--frames', str(F), '--quiet', '--on-error', 'raise']) == 2
    line = one_line(capsys)
    assert 'could not write the cache file' in line and 'No space left on device' in line, line
    assert not list(data.rglob('*.safetensors')) and not list(data.rglob('.*tmp*'))


def test_train_refuses_a_seed_out_of_range_before_loading(mcv, tmp_path, capsys):
    for seed in (str(2**70), '-1', str(2**31)):
        assert train_main(train_cmd(mcv, tmp_path / 'run', '--seed', seed)) == 2
        assert '--seed must be an integer from 0 to 2**31 - 1' in one_line(capsys)
    assert not (tmp_path / 'run').exists()


def test_synth_refuses_a_focal_length_given_twice(tmp_path, capsys):
    out = tmp_path / 'synth'
    assert cli(['synth', '--out', str(out), '--scenes', '1', '--focal-mm', '24', '24', '--frames', '5',
                '--height', '32', '--width', '48']) == 2
    assert 'focal length 24 mm is given twice' in one_line(capsys)
    assert not list(out.rglob('*.mp4'))


def test_a_csv_row_with_an_unclosed_quote_is_refused(clip, tmp_path, capsys):
    data = tmp_path / 'clips'
    (data / 'videos').mkdir(parents=True)
    shutil.copy(clip, data / 'videos' / 'a.mp4')
    shutil.copy(clip, data / 'videos' / 'b.mp4')
    (data / 'metadata.csv').write_text('file_name,text\na.mp4,"a caption never closed\nb.mp4,fine\n')
    assert cli(['prepare', str(data), '--codec', 'pixel', '--frames', '5', '--quiet']) == 2
    assert 'a quote that is never closed' in one_line(capsys)
    assert not list(data.rglob('*.safetensors'))


def test_a_dangling_symlink_at_out_is_not_replaced(clip, tmp_path, capsys):
    out = tmp_path / 'p.mp4'
    out.symlink_to(tmp_path / 'missing.mp4')
    args = ['preview', '--video', str(clip), '--trajectory', 'pan_right', '--frames', '9', '--height', '32',
            '--width', '48', '--out', str(out)]
    assert cli(args) == 2
    assert 'is a symbolic link to a missing file; pass --overwrite' in one_line(capsys)
    assert out.is_symlink() and not out.exists()
    assert cli([*args, '--overwrite']) == 0 and out.is_file() and not out.is_symlink()


def test_checkpoint_folders_follow_the_umask(tmp_path):
    from types import SimpleNamespace
    from infcam.checkpoints import build_model, save_checkpoint
    from infcam.scheduler import FlowMatchScheduler
    m = build_model('tiny', seed=0)
    names = m.freeze_base()
    module = SimpleNamespace(model=m, config=m.config, seed=0, base=None, base_sha256='', scheduler=FlowMatchScheduler(),
                             trainable_state=lambda: {n: m.state_dict()[n] for n in names})
    old = os.umask(0o022)
    try:
        ck = save_checkpoint(module, tmp_path / 'ckpt', 1)
        assert ck.stat().st_mode & 0o777 == 0o755 and (ck / 'state.pt').stat().st_mode & 0o777 == 0o644
    finally: os.umask(old)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_training_stopped_by_a_signal_cleans_up(mcv, tmp_path, sig):
    "SIGINT or SIGTERM while training checkpoints every step: one line, status 128 + signal, no half-written checkpoint."
    run = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'infcam.train', *train_cmd(mcv, run)[:-4], '--max-steps', '100000',
                          '--every', '1', '--keep-last', '2', '--num-workers', '0', '--accelerator', 'cpu', '--devices', '1'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join(sys.path)})
    try:
        deadline = time.time() + 300
        while not list((run / 'ckpt').glob('step*')) and p.poll() is None and time.time() < deadline: time.sleep(0.2)
        assert p.poll() is None, p.communicate()
        time.sleep(1.0)                                                   # well inside the saving loop
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    lines = [l for l in err.splitlines() if l.strip()]
    assert p.returncode == 128 + sig, (p.returncode, err[-2000:])
    assert lines[-1] == f'infcam.train: interrupted ({signal.Signals(sig).name})' and 'Traceback' not in err, err[-2000:]
    assert not list((run / 'ckpt').glob('.step*')), list((run / 'ckpt').iterdir())
    assert not (run / '.infcam.lock').exists()


@pytest.mark.parametrize('ext,text', [
    ('.json', '{"keyframes": [{"t": 0, "yaw": 10, "yaw": 3000}, {"t": 1}]}'),
    ('.yaml', 'keyframes:\n  - {t: 0, yaw: 10, yaw: 3000}\n  - {t: 1}\n'),
    ('.yaml', 'name: a\nname: b\nkeyframes:\n  - {t: 0}\n  - {t: 1}\n')])
def test_a_key_given_twice_in_a_trajectory_is_refused(clip, tmp_path, capsys, ext, text):
    f = tmp_path / f'path{ext}'
    f.write_text(text)
    assert cli(['preview', '--video', str(clip), '--trajectory', str(f), '--frames', '9', '--height', '32',
                '--width', '48', '--out', str(tmp_path / 'p.mp4')]) == 2
    assert 'is given twice in one mapping' in one_line(capsys) and not (tmp_path / 'p.mp4').exists()


@pytest.mark.parametrize('lens,msg', [('zoom: 1.0e-9', 'zoom must be a number from 0.02 to 50'),
                                      ('focal_mm: 5000', 'focal_mm must be a number from 1 mm to 1000 mm')])
def test_degenerate_keyframe_lenses_are_refused(clip, tmp_path, capsys, lens, msg):
    f = tmp_path / 'path.yaml'
    f.write_text(f'keyframes:\n  - {{t: 0}}\n  - {{t: 1, {lens}}}\n')
    assert cli(['preview', '--video', str(clip), '--trajectory', str(f), '--frames', '9', '--height', '32',
                '--width', '48', '--out', str(tmp_path / 'p.mp4')]) == 2
    assert msg in one_line(capsys)
    for bad in (['--zoom', '1e-9'], ['--focal-mm', '1e9']):
        assert cli(['preview', '--video', str(clip), '--trajectory', 'pan_right', '--frames', '9', '--height', '32',
                    '--width', '48', '--out', str(tmp_path / 'p.mp4'), *bad]) == 2
        assert 'must be a number from' in one_line(capsys)


def test_bench_refuses_a_bad_strategy_or_base_before_any_work(tmp_path, capsys):
    out, junk = tmp_path / 'b', tmp_path / 'junk.safetensors'
    junk.write_bytes(b'not weights')
    for extra, msg in ((['--strategy', 'fsdp'], "unknown strategy 'fsdp'"),
                       (['--base', str(tmp_path / 'none.safetensors')], 'base weights not found'),
                       (['--base', str(junk)], 'junk.safetensors')):
        assert cli(['bench', 'smoke', '--out', str(out), '--quiet', *extra]) == 2
        assert msg in one_line(capsys)
        assert not out.exists() or not any(out.iterdir()), list(out.rglob('*'))      # nothing rendered or trained


def _batch(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'metadata.csv').write_text('file_name,text\n' + ''.join(f'{a},{b}\n' for a, b in rows))
    return folder


def test_batch_output_names_never_collide(weights, clip, tmp_path, capsys):
    "Same file name in two folders, one clip with two prompts: every job its own result; run 2 skips them all."
    b = tmp_path / 'batch'
    for d in ('a', 'b'): (b / d).mkdir(parents=True); shutil.copy(clip, b / d / 'x.mp4')
    _batch(b, [('a/x.mp4', 'one'), ('b/x.mp4', 'two'), ('a/x.mp4', 'three')])
    args = ['generate', '--batch', str(b), '--trajectories', 'arc_left', '--weights', str(weights),
            '--out-dir', str(tmp_path / 'out'), *SMALL]
    assert generate_main(args) == 0 and 'generated 3, skipped 0' in capsys.readouterr().out
    sidecars = sorted((tmp_path / 'out').glob('*_arc_left.json'))
    assert len(sidecars) == 3 and not list((tmp_path / 'out').glob('.*incomplete'))
    made = {(Path(json.loads(f.read_text())['video']).parent.name, json.loads(f.read_text())['prompt']) for f in sidecars}
    assert made == {('a', 'one'), ('b', 'two'), ('a', 'three')}
    assert generate_main(args) == 0 and 'generated 0, skipped 3' in capsys.readouterr().out
    _batch(b, [('a/x.mp4', 'one'), ('a/x.mp4', 'one')])                      # a true duplicate: refused before work
    assert generate_main(['generate', '--batch', str(b), '--trajectories', 'arc_left', '--weights', str(weights),
                          '--out-dir', str(tmp_path / 'o2'), *SMALL]) == 2
    assert 'is listed twice with the same prompt' in one_line(capsys) and not (tmp_path / 'o2').exists()


def test_batch_rows_stay_inside_the_batch_folder(weights, clip, tmp_path, capsys):
    shutil.copy(clip, tmp_path / 'outside.mp4')
    b = _batch(tmp_path / 'batch', [('../outside.mp4', 'x')])
    assert generate_main(['generate', '--batch', str(b), '--trajectories', 'arc_left', '--weights', str(weights),
                          '--out-dir', str(tmp_path / 'out'), *SMALL]) == 2
    assert "points outside" in one_line(capsys) and not (tmp_path / 'out').exists()


def test_from_refuses_a_changed_video(weights, clip, tmp_path, capsys):
    video = tmp_path / 'v.mp4'; shutil.copy(clip, video)
    out = tmp_path / 'r' / 'x.mp4'
    assert _generate(video, weights, out) == 0
    write_video(video, torch.rand(9, 3, 32, 48, generator=torch.Generator().manual_seed(5)), overwrite=True)
    assert generate_main(['generate', '--from', str(out.with_suffix('.json')), '--out', str(tmp_path / 'again.mp4'),
                          '--quiet']) == 2
    assert 'is not the video' in one_line(capsys) and not (tmp_path / 'again.mp4').exists()


@pytest.mark.parametrize('kind', ['loop', 'fifo'])
def test_a_video_that_is_no_file_is_refused(weights, tmp_path, capsys, kind):
    v = tmp_path / 'v.mp4'
    if kind == 'loop': v.symlink_to(tmp_path / 'w.mp4'); (tmp_path / 'w.mp4').symlink_to(v)
    else: os.mkfifo(v)
    assert _generate(v, weights, tmp_path / 'o' / 'x.mp4') == 2          # a FIFO would block here forever
    assert ('symbolic link loop' if kind == 'loop' else 'not a regular file') in one_line(capsys)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_generate_stopped_while_writing_leaves_nothing(weights, clip, tmp_path, capsys, monkeypatch, sig):
    "A signal between the clip and its side-by-side: one line, 128 + signal, no clip, temporary, marker or sidecar left."
    import infcam.generate
    from infcam.core import Interrupted
    def stop(*a, **k): raise Interrupted(sig)
    monkeypatch.setattr(infcam.generate, 'write_comparison', stop)
    out = tmp_path / 'r' / 'x.mp4'
    assert _generate(clip, weights, out) == 128 + sig
    assert one_line(capsys) == f'infcam: interrupted ({signal.Signals(sig).name})'
    assert not list(out.parent.iterdir()), list(out.parent.iterdir())


def test_a_generation_beyond_the_memory_limit_is_refused_before_loading(weights, clip, tmp_path):
    """Under an address-space limit (`prlimit --as`, `ulimit -v`), 33 frames at 2048x2048 with the tiny model are refused
    in one line before the model loads (they died in the allocator); the small run still works under the same limit."""
    import resource
    def limit(): resource.setrlimit(resource.RLIMIT_AS, (6_000_000_000, 6_000_000_000))
    base = [sys.executable, '-m', 'infcam.cli', 'generate', '--video', str(clip), '--prompt', 'a street', '--trajectory',
            'arc_left', '--weights', str(weights), *SMALL]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    big = subprocess.run(base + ['--frames', '33', '--height', '2048', '--width', '2048', '--out', str(tmp_path / 'big.mp4')],
                         capture_output=True, text=True, preexec_fn=limit, env=env, timeout=300)
    err = big.stderr.strip().splitlines()
    assert big.returncode == 2 and len(err) == 1, big.stderr[-2000:]
    assert 'a 33x2048x2048 generation needs about' in err[0] and 'address-space limit' in err[0], err
    assert not list(tmp_path.glob('big*'))
    small = subprocess.run(base + ['--out', str(tmp_path / 'small.mp4')], capture_output=True, text=True,
                           preexec_fn=limit, env=env, timeout=300)
    assert small.returncode == 0, small.stderr[-2000:]
    assert (tmp_path / 'small.mp4').stat().st_size > 0

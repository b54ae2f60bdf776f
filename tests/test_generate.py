"""`infcam generate` as a command: outputs and sidecar, refusals before loading, batches, sharding over processes, the
inference notebook under papermill. 32_generate runs one generation and one refusal as examples; the cases here are
the ones a notebook should not hold (subprocesses, several processes, failure paths)."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

import infcam.generate as G
from infcam.generate import generate_main, run_jobs, Job
from infcam.video import write_video, read_video

ROOT = Path(__file__).resolve().parents[1]
SMALL = ['--size', 'tiny', '--frames', '9', '--height', '32', '--width', '48', '--steps', '2', '--dtype', 'fp32',
         '--device', 'cpu', '--quiet']


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory):
    n = torch.get_num_threads(); torch.set_num_threads(1)
    old = os.environ.get('INFCAM_CACHE')
    os.environ['INFCAM_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    yield
    torch.set_num_threads(n)
    if old is None: os.environ.pop('INFCAM_CACHE', None)
    else: os.environ['INFCAM_CACHE'] = old


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from infcam.testing import make_tiny_release
    return make_tiny_release(tmp_path_factory.mktemp('w') / 'weights')


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp('clips')
    g = torch.Generator().manual_seed(0)
    write_video(d / 'a.mp4', torch.rand(9, 3, 32, 48, generator=g))
    return d / 'a.mp4'


class Loads:
    "Counts pipeline loads."
    def __init__(self, mp):
        self.n = 0
        real = G.load_pipeline
        def f(*a, **k): self.n += 1; return real(*a, **k)
        mp.setattr(G, 'load_pipeline', f)


def single(clip, weights, out, *extra):
    return ['generate', '--video', str(clip), '--prompt', 'a street', '--trajectory', 'arc_left',
            '--weights', str(weights), '--out', str(out), *SMALL, *extra]


def test_single_outputs_and_sidecar(clip, weights, tmp_path, capsys, monkeypatch):
    import infcam.pipeline as P
    out, loaded, runs = tmp_path / 'r' / 'y.mp4', [], []
    for m in (G, P):
        real = m.load_trajectory
        monkeypatch.setattr(m, 'load_trajectory', lambda *a, real=real, **k: (loaded.append(a[0]), real(*a, **k))[1])
    real_run = G.training_run
    monkeypatch.setattr(G, 'training_run', lambda *a, **k: (runs.append(a), real_run(*a, **k))[1])
    assert generate_main(single(clip, weights, out, '--seed', '3', '--focal-mm', '35')) == 0
    assert loaded == ['arc_left'] and len(runs) == 1          # the trajectory loaded, the run looked for: once each
    for p in (out, out.with_suffix('.sbs.mp4'), out.with_suffix('.json')): assert p.is_file(), p
    assert read_video(out).shape == (9, 3, 32, 48)
    from infcam.video import video_info
    assert video_info(out.with_suffix('.sbs.mp4'))['width'] >= 2 * 48 + 4     # source | gap | generated
    s = json.loads(out.with_suffix('.json').read_text())
    st = s['settings']
    assert (st['seed'], st['steps'], st['cfg'], st['frames'], st['height'], st['width']) == (3, 2, 5.0, 9, 32, 48)
    assert st['memory'] == 'resident' and st['dtype'] == 'fp32' and st['negative_prompt']
    assert s['intrinsics']['method'] == 'explicit' and len(s['intrinsics']['K_src']) == 4
    assert s['intrinsics']['K_tgt'] == s['intrinsics']['K_src']               # zoom 1
    assert len(s['extrinsics']) == 3 and len(s['extrinsics'][0]) == 12       # 9 frames -> 3 latent frames
    assert s['trajectory'] == 'arc_left' and s['prompt'] == 'a street'
    assert s['versions']['torch'] == torch.__version__ and s['versions']['infcam']
    files = s['weights']['files']
    assert set(files) == {'infcam', 'vae', 'text_encoder', 'tokenizer'}
    import hashlib
    f = files['vae'][0]
    assert f['sha256'] == hashlib.sha256(Path(f['file']).read_bytes()).hexdigest()
    cache = json.loads((Path(os.environ['INFCAM_CACHE']) / 'sha256.json').read_text())
    assert f['file'] in cache


def test_refuses_existing_without_overwrite(clip, weights, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'y.mp4'
    assert generate_main(single(clip, weights, out)) == 0
    loads = Loads(monkeypatch)
    capsys.readouterr()
    assert generate_main(single(clip, weights, out)) == 2
    err = capsys.readouterr().err.strip()
    assert 'already exists' in err and '--overwrite' in err and len(err.splitlines()) == 1
    assert loads.n == 0
    assert generate_main(single(clip, weights, out, '--overwrite')) == 0 and loads.n == 1


def test_batch_continues_past_bad_clip_and_skips(clip, weights, tmp_path, capsys, monkeypatch):
    b = tmp_path / 'batch'; (b / 'videos').mkdir(parents=True)
    shutil.copy(clip, b / 'videos' / 'good.mp4')
    (b / 'videos' / 'bad.mp4').write_bytes(b'not a video at all' * 10)
    write_video(b / 'short.mp4', torch.rand(5, 3, 32, 48))
    (b / 'metadata.csv').write_text('file_name,text\ngood.mp4,a street\nbad.mp4,a cat\nshort.mp4,a dog\n')
    argv = ['generate', '--batch', str(b), '--trajectories', 'arc_left,pan_right', '--out-dir', str(tmp_path / 'o'),
            '--weights', str(weights), *SMALL]
    loads = Loads(monkeypatch)
    assert generate_main(argv) == 2
    cap = capsys.readouterr()
    assert loads.n == 1
    assert 'generated 2, skipped 0 (already there), failed 4 of 6' in cap.out
    assert 'FAILED bad.mp4 x arc_left' in cap.out and 'FAILED short.mp4 x pan_right' in cap.out and 'too short' in cap.out
    assert '4 of 6 generation(s) failed' in cap.err
    o = tmp_path / 'o'
    for t in ('arc_left', 'pan_right'):
        for ext in ('.mp4', '.sbs.mp4', '.json'): assert (o / f'good_{t}{ext}').is_file()
    assert not list(o.glob('bad_*')) and not list(o.glob('.*'))           # nothing half-written
    # rerun: the good results are skipped, nothing is loaded (only bad clips left)
    assert generate_main(argv) == 2
    assert 'generated 0, skipped 2' in capsys.readouterr().out and loads.n == 1


def test_missing_weights_names_file(clip, weights, tmp_path, capsys):
    w = tmp_path / 'w'; shutil.copytree(weights, w)
    (w / 'Wan2.1-T2V-1.3B' / 'Wan2.1_VAE.pth').unlink()
    assert generate_main(single(clip, w, tmp_path / 'y.mp4')) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Wan2.1_VAE.pth' in err and 'VAE' in err
    assert not (tmp_path / 'y.mp4').exists()


@pytest.mark.parametrize('extra,msg', [(['--height', '40'], 'multiple of 16'), (['--frames', '10'], '4k+1'),
                                       (['--trajectory', 'spin_around'], 'trajectory'), (['--steps', '0'], 'steps')])
def test_user_errors_before_loading(clip, weights, tmp_path, capsys, monkeypatch, extra, msg):
    loads = Loads(monkeypatch)
    assert generate_main(single(clip, weights, tmp_path / 'y.mp4') + extra) == 2
    assert msg in capsys.readouterr().err and loads.n == 0       # refused before any weight was read


def test_a_batch_reads_a_trajectory_file_and_looks_for_the_run_once(clip, weights, tmp_path, monkeypatch):
    import infcam.trajectories as T
    b = tmp_path / 'batch'; b.mkdir()
    shutil.copy(clip, b / 'a.mp4'); shutil.copy(clip, b / 'b.mp4')
    (b / 'metadata.csv').write_text('file_name,text\na.mp4,a street\nb.mp4,a field\n')
    T.Trajectory([T.Keyframe(0.), T.Keyframe(1., yaw=10., zoom=1.5)], name='turn').save(tmp_path / 'turn.yaml')
    reads, runs = [], []
    real_read, real_run = T.read_trajectory_file, G.training_run
    monkeypatch.setattr(T, 'read_trajectory_file', lambda p: (reads.append(p), real_read(p))[1])
    monkeypatch.setattr(G, 'training_run', lambda *a, **k: (runs.append(a), real_run(*a, **k))[1])
    assert generate_main(['generate', '--batch', str(b), '--trajectories', str(tmp_path / 'turn.yaml'), '--weights',
                          str(weights), '--out-dir', str(tmp_path / 'out'), *SMALL]) == 0
    assert len(reads) == 1 and len(runs) == 1                   # two jobs, one file read, one look for a run
    side = json.loads((tmp_path / 'out' / 'b_turn.json').read_text())
    assert side['trajectory'] == str(tmp_path / 'turn.yaml')
    assert side['intrinsics']['K_tgt'][0] > side['intrinsics']['K_src'][0]   # the file's zoom reached the pipeline


def test_unreadable_and_short_video(weights, tmp_path, capsys, monkeypatch):
    loads = Loads(monkeypatch)
    (tmp_path / 'bad.mp4').write_bytes(b'garbage' * 50)
    assert generate_main(single(tmp_path / 'bad.mp4', weights, tmp_path / 'y.mp4')) == 2
    assert 'bad.mp4' in capsys.readouterr().err
    write_video(tmp_path / 's.mp4', torch.rand(5, 3, 32, 48))
    assert generate_main(single(tmp_path / 's.mp4', weights, tmp_path / 'y.mp4')) == 2
    assert 'too short' in capsys.readouterr().err and loads.n == 0


def test_oom_suggests_lighter_mode(clip, weights, tmp_path, capsys, monkeypatch):
    def boom(*a, **k): raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(G, 'load_pipeline', boom)
    assert generate_main(single(clip, weights, tmp_path / 'y.mp4')) == 2       # offloading is refused on the CPU
    err = capsys.readouterr().err
    assert 'out of GPU memory with --memory resident' in err and 'try --memory model_offload' in err


def test_from_sidecar_reproduces(clip, weights, tmp_path, capsys):
    out = tmp_path / 'y.mp4'
    assert generate_main(single(clip, weights, out, '--seed', '7', '--cfg', '3')) == 0
    again = tmp_path / 'again.mp4'
    assert generate_main(['generate', '--from', str(out.with_suffix('.json')), '--out', str(again), '--quiet']) == 0
    a, b = json.loads(out.with_suffix('.json').read_text()), json.loads(again.with_suffix('.json').read_text())
    assert a['settings'] == b['settings'] and a['extrinsics'] == b['extrinsics'] and a['weights'] == b['weights']
    assert torch.equal(read_video(out), read_video(again))


def test_subprocess_exit_code(tmp_path):
    r = subprocess.run([sys.executable, '-c', 'import sys; from infcam.generate import generate_main; '
                        'sys.exit(generate_main(sys.argv[1:]))', 'generate', '--video', str(tmp_path / 'none.mp4'),
                        '--prompt', 'x', '--trajectory', 'arc_left', '--out', str(tmp_path / 'y.mp4'),
                        '--weights', str(tmp_path), *SMALL], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith('infcam: error:') and len(r.stderr.strip().splitlines()) == 1


def test_inference_notebook_papermill(tmp_path, weights):
    import papermill  # noqa: F401  (a dev requirement: fail, never skip, if it is missing)
    out = tmp_path / 'out.ipynb'
    r = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'inference.ipynb'), str(out),
                        '-p', 'frames', '9', '-p', 'steps', '2', '-p', 'out_dir', str(tmp_path / 'runs'), '-p', 'weights', str(weights),
                        '-y', 'trajectories: [arc_left]', '--cwd', str(ROOT / 'nbs'), '-k', 'python3'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'runs' / 'demo_arc_left.mp4').is_file() and (tmp_path / 'runs' / 'demo_arc_left.json').is_file()
    bad = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'inference.ipynb'), str(tmp_path / 'bad.ipynb'),
                          '-p', 'frame', '9', '-p', 'out_dir', str(tmp_path / 'runs2'), '--cwd', str(ROOT / 'nbs'), '-k', 'python3'],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and 'unknown parameter(s) frame;' in bad.stderr + bad.stdout
    assert not (tmp_path / 'runs2').exists()                                  # stopped before any work


def test_estimate_fallback_recorded(clip, weights, tmp_path, capsys):
    "The clip is uniform noise: self-calibration has nothing to track, so it must fall back, say so, and record it."
    out = tmp_path / 'y.mp4'
    assert generate_main(single(clip, weights, out, '--estimate', 'selfcal')) == 0
    i = json.loads(out.with_suffix('.json').read_text())['intrinsics']
    assert i['requested'] == 'selfcal' and i['method'] == 'default' and 'fell back' in i['message']
    assert 'fell back' in capsys.readouterr().err


def test_output_plays_at_the_source_frame_rate(weights, tmp_path):
    from infcam.video import video_info
    src = tmp_path / 'pal.mp4'
    write_video(src, torch.rand(9, 3, 32, 48, generator=torch.Generator().manual_seed(1)), fps=25)
    out = tmp_path / 'r' / 'x.mp4'
    assert generate_main(single(src, weights, out)) == 0
    assert video_info(out)['fps'] == 25 and video_info(out.with_suffix('.sbs.mp4'))['fps'] == 25
    assert json.loads(out.with_suffix('.json').read_text())['fps'] == 25


def same_bytes(a:Path, b:Path) -> list[str]:
    "The names of the files (timings aside) that differ between folders `a` and `b`, or are in one only."
    names = lambda d: {p.name for p in d.iterdir() if not p.name.endswith('.timings.json')}
    return sorted(n for n in names(a) | names(b) if not ((a / n).is_file() and (b / n).is_file()
                                                          and (a / n).read_bytes() == (b / n).read_bytes()))


def test_batch_sharded_over_two_processes_matches_one(clip, weights, tmp_path, capsys):
    """Two gloo processes (Lightning Fabric) share a batch: the same bytes as one process in every file, sidecars
    included, and the same again on a second run of each; nothing twice; a killed run finishes."""
    b = tmp_path / 'batch'; (b / 'videos').mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    shutil.copy(clip, b / 'videos' / 'a.mp4')
    write_video(b / 'videos' / 'b.mp4', torch.rand(9, 3, 32, 48, generator=g))
    (b / 'metadata.csv').write_text('file_name,text\na.mp4,a street\nb.mp4,a field\n')
    base = ['generate', '--batch', str(b), '--trajectories', 'arc_left,pan_right,tilt_up', '--weights', str(weights), *SMALL]
    assert generate_main([*base, '--out-dir', str(tmp_path / 'one')]) == 0
    capsys.readouterr()
    assert generate_main([*base, '--out-dir', str(tmp_path / 'two'), '--devices', '2']) == 0
    out = capsys.readouterr().out
    assert 'generated 6, skipped 0 (already there), failed 0 of 6' in out      # each job once, across both ranks
    one, two = tmp_path / 'one', tmp_path / 'two'
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 24     # 6 x (clip, sbs, sidecar, timings)
    assert same_bytes(one, two) == []                                        # sharded: the bytes of one process
    assert generate_main([*base, '--out-dir', str(tmp_path / 'one_again')]) == 0
    assert generate_main([*base, '--out-dir', str(tmp_path / 'two_again'), '--devices', '2']) == 0
    assert same_bytes(one, tmp_path / 'one_again') == [] and same_bytes(two, tmp_path / 'two_again') == []
    capsys.readouterr()
    # a run killed while writing b_tilt_up: its marker is left, its clip half there; the rerun finishes only that one
    (two / 'b_tilt_up.mp4').unlink(); (two / '.b_tilt_up.incomplete').touch()
    assert generate_main([*base, '--out-dir', str(two), '--devices', '2']) == 0
    assert 'generated 1, skipped 5' in capsys.readouterr().out
    assert same_bytes(one, two) == []
    assert not list(two.glob('.*incomplete'))
    assert generate_main(['generate', '--video', str(clip), '--prompt', 'x', '--trajectory', 'pan_left', '--out',
                          str(tmp_path / 'x.mp4'), '--weights', str(weights), '--devices', '2', *SMALL]) == 2
    assert 'share the jobs of a --batch run' in capsys.readouterr().err


def test_numerics_released_from_the_command_line(clip, weights, tmp_path, capsys):
    "--numerics released reaches the pipeline (bf16 DiT, the VAE tiled in bf16) and the sidecar; an fp32 DiT is refused."
    import infcam.pipeline as P
    made = []
    real = P.InfCamPipeline.__init__
    def spy(self, *a, **k): real(self, *a, **k); made.append(self)
    import unittest.mock as um
    out = tmp_path / 'r.mp4'
    with um.patch.object(P.InfCamPipeline, '__init__', spy):
        assert generate_main(single(clip, weights, out, '--numerics', 'released', '--dtype', 'bf16')) == 0
    p, = made
    assert p.numerics == 'released' and p.dtype == torch.bfloat16
    assert p.codec.vae.use_tiling and p.codec.vae.dtype == torch.bfloat16
    s = json.loads(out.with_suffix('.json').read_text())
    assert s['settings']['numerics'] == 'released' and s['model_dtype'] == 'bfloat16'
    assert generate_main(single(clip, weights, tmp_path / 'x.mp4', '--numerics', 'released')) == 2   # SMALL says fp32
    assert 'drop --dtype fp32' in capsys.readouterr().err and not (tmp_path / 'x.mp4').exists()

"""`infcam evaluate` on infcam's own results and on "another method's" folder described by a CSV: the same videos give
the same table, a re-run scores nothing again, and bad inputs are one-line errors."""
import json, math, os, shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from infcam.cli import main as cli
from infcam.generate import generate_main

SMALL = ['--size', 'tiny', '--frames', '9', '--height', '32', '--width', '48', '--steps', '2', '--dtype', 'fp32',
         '--device', 'cpu', '--quiet']


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    "Two infcam results on a synthetic scene, each asked for another camera of the scene (which is its ground truth)."
    from infcam.synthetic import make_dataset
    from infcam.testing import make_tiny_release
    d = tmp_path_factory.mktemp('ev')
    os.environ.setdefault('INFCAM_CACHE', str(d / 'cache'))
    n = torch.get_num_threads(); torch.set_num_threads(1)
    make_dataset(d / 'mcv', 1, num_frames=9, height=32, width=48, progress=False, num_objects=2, num_moving=0)
    scene = next((d / 'mcv').glob('*/scene1'))
    weights = make_tiny_release(d / 'weights')
    for cam in ('cam03', 'cam05'):
        assert generate_main(['generate', '--video', str(scene / 'videos' / 'cam01.mp4'), '--prompt', 'a scene',
                              '--trajectory', f"{scene / 'cameras' / 'camera_extrinsics.json'}:{cam}@cam01",
                              '--weights', str(weights), '--out', str(d / 'ours' / f'{cam}.mp4'), *SMALL]) == 0
    torch.set_num_threads(n)
    return d, scene


def test_ours_and_another_method_give_the_same_table(results, capsys):
    d, scene = results
    other = d / 'other'; other.mkdir()
    rows = ['video,trajectory']
    for cam in ('cam03', 'cam05'):                           # the same clips, renamed, described by a CSV
        shutil.copy(d / 'ours' / f'{cam}.mp4', other / f'clip_{cam}.mp4')
        rows.append(f"clip_{cam}.mp4,{scene / 'cameras' / 'camera_extrinsics.json'}:{cam}@cam01")
    (other / 'requests.csv').write_text('\n'.join(rows) + '\n')
    assert cli(['evaluate', str(d / 'ours'), str(other / 'requests.csv'), '--out', str(d / 'eval'), '--quiet']) == 0
    out = capsys.readouterr().out
    assert '| infcam | 2 | 2 |' in out and '| requests | 2 | 2 |' in out and 'scored 4 video(s) now' in out
    assert '| RotErr median ↓ | RotErr < 5° ↑ |' in out and 'median (robust to the few clips' in out
    summary = pd.read_csv(d / 'eval' / 'summary.csv').set_index('method')
    assert summary.index.tolist() == ['infcam', 'requests']
    for k in ('PSNR', 'SSIM', 'registered', 'RotErr_median', 'RotErr_under'):   # the same clips: the same row of the table
        assert summary.loc['infcam', k] == pytest.approx(summary.loc['requests', k], abs=1e-9, nan_ok=True)
    rows = pd.read_csv(d / 'eval' / 'rows.csv', keep_default_na=False)
    assert (rows['error'] == '').all() and len(rows) == 4
    assert all(Path(t).name in ('cam03.mp4', 'cam05.mp4') for t in rows['truth'])   # the scene's own renders
    by = rows.set_index('name')
    for cam in ('cam03', 'cam05'):
        assert by.loc[cam, 'PSNR'] == pytest.approx(by.loc[f'clip_{cam}', 'PSNR'], abs=1e-9)
        assert by.loc[cam, 'SSIM'] == pytest.approx(by.loc[f'clip_{cam}', 'SSIM'], abs=1e-9)
        assert 0 < by.loc[cam, 'PSNR'] < 60
    for f in ('rows.csv', 'summary.csv', 'summary.md', 'summary.png'): assert (d / 'eval' / f).stat().st_size > 50


def test_method_option_and_rerun_scores_only_changes(results, capsys):
    d, scene = results
    other = d / 'other2'; other.mkdir()
    shutil.copy(d / 'ours' / 'cam03.mp4', other / 'x.mp4')
    (other / 'theirs.csv').write_text(f"video,trajectory\nx.mp4,{scene / 'cameras' / 'camera_extrinsics.json'}:cam03@cam01\n")
    args = ['evaluate', str(d / 'ours'), str(other / 'theirs.csv'), '--method', 'run7', '--out', str(d / 'eval2'), '--quiet']
    assert cli(args) == 0
    s = pd.read_csv(d / 'eval2' / 'summary.csv')
    assert s['method'].tolist() == ['run7'] and s['videos'].tolist() == [3]      # --method names every input
    capsys.readouterr()
    assert cli(args) == 0 and 'scored 0 video(s) now, 3 unchanged' in capsys.readouterr().out
    os.utime(other / 'x.mp4', ns=(1, 1))                       # a changed video is scored again
    assert cli(args) == 0 and 'scored 1 video(s) now, 2 unchanged' in capsys.readouterr().out


@pytest.mark.parametrize('content,msg', [
    ('clip,trajectory\nx.mp4,pan_left\n', 'has no video column'),
    ('video,trajectory,colour\nx.mp4,pan_left,red\n', "unknown column 'colour'"),
    ('video,trajectory\n', 'nothing to evaluate'),
])
def test_bad_tables_are_one_line_errors(tmp_path, capsys, content, msg):
    (tmp_path / 't.csv').write_text(content)
    assert cli(['evaluate', str(tmp_path / 't.csv'), '--out', str(tmp_path / 'e')]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and 'Traceback' not in err


def test_unreadable_video_is_listed_not_fatal(results, tmp_path, capsys):
    "Videos that cannot be scored are listed; with nothing scored at all the command fails (the tables are still written)."
    d, scene = results
    (tmp_path / 'bad.mp4').write_bytes(b'no video here')
    (tmp_path / 't.csv').write_text('video,trajectory\nbad.mp4,pan_left\nmissing.mp4,tilt_up\n')
    assert cli(['evaluate', str(tmp_path / 't.csv'), '--out', str(tmp_path / 'e'), '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'none of the 2 video(s) could be scored' in err, err
    md = (tmp_path / 'e' / 'summary.md').read_text()
    assert 'Not scored:' in md and 'bad: cannot read video' in md and 'missing: video not found' in md
    (tmp_path / 'u.csv').write_text(f"video,trajectory\nbad.mp4,pan_left\n{d / 'ours' / 'cam05.mp4'},"
                                    f"{scene / 'cameras' / 'camera_extrinsics.json'}:cam05@cam01\n")
    assert cli(['evaluate', str(tmp_path / 'u.csv'), '--out', str(tmp_path / 'e2'), '--quiet']) == 0   # one of two
    out = capsys.readouterr().out
    assert 'Not scored:' in out and 'scored 1 video(s) now, 1 could not be scored (listed above), 0 unchanged' in out
    for bad in ('2', 'nan', '-0.1'):
        assert cli(['evaluate', str(tmp_path / 'u.csv'), '--out', str(tmp_path / 'e3'), '--min-registered', bad]) == 2
        assert 'min_registered (a fraction of the frames) must be a number from 0 to 1' in capsys.readouterr().err
    assert not (tmp_path / 'e3').exists()
    assert cli(['evaluate', str(tmp_path / 'nope'), '--out', str(tmp_path / 'e')]) == 2
    assert 'neither a results folder nor a .csv table' in capsys.readouterr().err


def _save_inception(path):
    "A stand-in for the TorchScript Inception of FID (inception-2015-12-05.pt): a scripted module with `layers`."
    class Feat(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 4), torch.nn.AdaptiveAvgPool2d(2))
        def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
            return self.layers((x.float() - 128) / 128).flatten(1)
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Feat()), str(path))


def test_unpaired_fid_fvd_against_a_reference(tmp_path, capsys):
    "No ground truth (new views of in-the-wild clips): FID/FVD against the sources, a folder or a CSV of videos."
    from infcam.synthetic import make_dataset
    from infcam.fvd import InceptionI3d
    make_dataset(tmp_path / 'mcv', 1, num_frames=17, height=32, width=48, progress=False, num_objects=2, num_moving=0)
    vids = next((tmp_path / 'mcv').glob('*/scene1')) / 'videos'
    torch.manual_seed(0); torch.save(InceptionI3d().state_dict(), tmp_path / 'i3d.pt')
    _save_inception(tmp_path / 'inc.pt')
    # two "generated" videos (no truth: a preset was asked), made from two sources
    (tmp_path / 'm.csv').write_text('video,trajectory,source\n' + ''.join(
        f"{vids / f'cam0{k}.mp4'},pan_left,{vids / f'cam0{k - 2}.mp4'}\n" for k in (3, 4)))
    (tmp_path / 'same.csv').write_text('video\n' + ''.join(f"{vids / f'cam0{k}.mp4'}\n" for k in (3, 4)))
    (tmp_path / 'dir').mkdir()
    for k in (5, 6): shutil.copy(vids / f'cam0{k}.mp4', tmp_path / 'dir')
    w = ['--fvd-weights', str(tmp_path / 'i3d.pt'), '--fid-weights', str(tmp_path / 'inc.pt'), '--quiet']
    get = lambda: pd.read_csv(tmp_path / 'e' / 'summary.csv').iloc[0]   # one folder: the clips are scored once
    assert cli(['evaluate', str(tmp_path / 'm.csv'), '--out', str(tmp_path / 'e'), *w]) == 0
    assert get()[['FVD', 'FID']].isna().all()                      # paired: nothing has a ground truth
    assert cli(['evaluate', str(tmp_path / 'm.csv'), '--out', str(tmp_path / 'e'), '--reference', str(tmp_path / 'same.csv'), *w]) == 0
    assert abs(get()['FVD']) < 1e-3 and abs(get()['FID']) < 1e-6   # the same two videos as the reference
    assert 'against ' + str(tmp_path / 'same.csv') + ' (unpaired)' in capsys.readouterr().out
    for ref in ('sources', str(tmp_path / 'dir')):                        # other clips: a distance (random I3D logits barely move)
        assert cli(['evaluate', str(tmp_path / 'm.csv'), '--out', str(tmp_path / 'e'), '--reference', ref, *w]) == 0
        assert get()['FVD'] >= 0 and get()['FID'] > 1e-3
    capsys.readouterr()
    assert cli(['evaluate', str(tmp_path / 'm.csv'), '--out', str(tmp_path / 'e'), '--reference', str(tmp_path / 'no'), *w]) == 2
    assert "a folder of videos or a CSV" in capsys.readouterr().err


def test_fvd_and_fid_columns_with_local_weights(results, capsys):
    "With --fvd-weights (here a random I3D saved as the released file would be), the summary has each method's FVD."
    from infcam.fvd import InceptionI3d
    d, scene = results
    torch.manual_seed(0)
    w = d / 'i3d_pretrained_400.pt'
    if not w.exists(): torch.save(InceptionI3d().state_dict(), w)
    _save_inception(d / 'inception.pt')
    from infcam.metrics import AlexLPIPS
    lp = AlexLPIPS()                                           # random LPIPS weights saved under the released names
    torch.save({f'lin{k}.model.1.weight': l.weight.abs() for k, l in enumerate(lp.lins)}, d / 'alex.pth')
    torch.save({f'features.{i}.{n}': getattr(c, n) for i, c in zip(AlexLPIPS.INDEX, lp.convs) for n in ('weight', 'bias')}, d / 'alexnet.pth')
    assert cli(['evaluate', str(d / 'ours'), '--out', str(d / 'eval_fvd'), '--fvd-weights', str(w),
                '--fid-weights', str(d / 'inception.pt'), '--lpips-weights', str(d / 'alex.pth'),
                '--lpips-backbone', str(d / 'alexnet.pth'), '--quiet']) == 0
    out = capsys.readouterr().out
    assert '| LPIPS ↓ | FVD ↓ | FID ↓ |' in out and "against each video's ground truth (paired)" in out
    rows = pd.read_csv(d / 'eval_fvd' / 'rows.csv')
    assert rows['LPIPS'].notna().all() and (rows['LPIPS'] > 0).all()   # each clip against its truth
    s = pd.read_csv(d / 'eval_fvd' / 'summary.csv')
    assert s['FVD'].isna().all()                               # 9-frame clips: the protocol's 16 frames are not there
    assert s['FID'].notna().all() and (s['FID'] > 0).all()     # their six scored frames against the truths' six
    assert cli(['evaluate', str(d / 'ours'), '--out', str(d / 'eval_fvd2'), '--fvd-weights', str(d / 'none.pt')]) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_sharded_evaluation_matches_one_process_and_resumes(results, capsys):
    "Two gloo processes score the same rows as one; what a killed run scored (.rows.partN.csv) is not scored again."
    d, scene = results
    assert cli(['evaluate', str(d / 'ours'), '--out', str(d / 'e1'), '--quiet']) == 0
    assert cli(['evaluate', str(d / 'ours'), '--out', str(d / 'e2'), '--quiet', '--devices', '2']) == 0
    capsys.readouterr()
    a, b = (pd.read_csv(d / e / 'rows.csv', keep_default_na=False).set_index('name') for e in ('e1', 'e2'))
    assert a.index.tolist() == b.index.tolist()
    for k in ('PSNR', 'SSIM', 'registered', 'frames'): assert (a[k] == b[k]).all(), k
    assert not list((d / 'e2').glob('.rows.part*'))
    # a killed run: the table is gone, one process had scored cam03
    part = pd.read_csv(d / 'e2' / 'rows.csv', keep_default_na=False)
    part[part['name'] == 'cam03'].to_csv(d / 'e2' / '.rows.part1.csv', index=False)
    (d / 'e2' / 'rows.csv').unlink()
    assert cli(['evaluate', str(d / 'ours'), '--out', str(d / 'e2'), '--quiet']) == 0
    assert 'scored 1 video(s) now, 1 unchanged' in capsys.readouterr().out
    assert not list((d / 'e2').glob('.rows.part*'))


def test_unmeasured_metrics_are_drawn_as_missing(tmp_path, monkeypatch):
    "A NaN (not measured) has no bar, not a bar of height 0 (the best value of a lower-is-better panel), and a note."
    import numpy as np
    import infcam.evaluate as ev
    figs = []
    monkeypatch.setattr(ev, 'write_figure', lambda fig, path: figs.append(fig) or Path(path))
    s = pd.DataFrame({'method': ['a', 'b'], **{k: [1., np.nan] for k in ev.METRICS}, **{k + '_se': [0.1, np.nan] for k in ev.METRICS}})
    ev.plot_methods(s, tmp_path / 'p.png')
    for ax in figs[0].axes:
        heights = [p.get_height() for p in ax.patches]
        assert heights == [1.], (ax.get_title(), heights)
        assert any('not measured: b' in t.get_text() for t in ax.texts)


def _relative_sidecar(d, scene, folder, trajectory):
    "A copy of the cam03 result whose sidecar names `trajectory` (as `generate` run in `d` would have stored it)."
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(d / 'ours' / 'cam03.mp4', folder / 'cam03.mp4')
    side = json.loads((d / 'ours' / 'cam03.json').read_text())
    side['trajectory'] = trajectory
    (folder / 'cam03.json').write_text(json.dumps(side))


def test_sidecar_trajectory_relative_to_where_generate_ran(results, tmp_path, monkeypatch, capsys):
    "Evaluated from another folder, a relative trajectory still finds its ground truth; a missing one is reported."
    d, scene = results
    rel = os.path.relpath(scene / 'cameras' / 'camera_extrinsics.json', d)
    _relative_sidecar(d, scene, d / 'rel', f"{rel}:cam03@cam01")
    _relative_sidecar(d, scene, d / 'gone', "gone/cameras/camera_extrinsics.json:cam03@cam01")
    monkeypatch.chdir(tmp_path)
    assert cli(['evaluate', str(d / 'rel'), '--out', str(tmp_path / 'e'), '--quiet']) == 0
    rows = pd.read_csv(tmp_path / 'e' / 'rows.csv', keep_default_na=False)
    assert Path(rows['truth'][0]) == scene / 'videos' / 'cam03.mp4' and 0 < float(rows['PSNR'][0]) < 60
    capsys.readouterr()
    assert cli(['evaluate', str(d / 'gone'), '--out', str(tmp_path / 'e2'), '--quiet']) == 0
    out = capsys.readouterr().out
    assert 'no ground truth: gone/cameras/camera_extrinsics.json not found' in out
    assert pd.read_csv(tmp_path / 'e2' / 'rows.csv')['PSNR'].isna().all()


def test_identical_video_is_counted_not_averaged(results, tmp_path, capsys):
    "A video equal to its ground truth has an infinite PSNR: counted beside the mean, which is over the others."
    d, scene = results
    cams = scene / 'cameras' / 'camera_extrinsics.json'
    (tmp_path / 'm.csv').write_text(f"name,video,trajectory\nsame,{scene / 'videos' / 'cam03.mp4'},{cams}:cam03@cam01\n"
                                    f"other,{scene / 'videos' / 'cam01.mp4'},{cams}:cam03@cam01\n")
    assert cli(['evaluate', str(tmp_path / 'm.csv'), '--out', str(tmp_path / 'e'), '--quiet']) == 0
    rows = pd.read_csv(tmp_path / 'e' / 'rows.csv').set_index('name')
    assert rows.loc['same', 'PSNR'] == float('inf') and 0 < rows.loc['other', 'PSNR'] < 60
    s = pd.read_csv(tmp_path / 'e' / 'summary.csv').iloc[0]
    assert s['PSNR'] == pytest.approx(rows.loc['other', 'PSNR']) and s['PSNR_inf'] == 1
    assert f"{rows.loc['other', 'PSNR']:.2f} (∞ ×1)" in capsys.readouterr().out


def test_poses_by_colmap_and_the_cache_knows_the_estimator(results, tmp_path, capsys, monkeypatch):
    "--poses colmap poses infcam's results and another method's CSV; a row posed by one estimator is not served for the other."
    import sys
    d, scene = results
    (tmp_path / 'theirs.csv').write_text(f"video,trajectory\n{d / 'ours' / 'cam05.mp4'},{scene / 'cameras' / 'camera_extrinsics.json'}:cam05@cam01\n")
    args = ['evaluate', str(d / 'ours'), str(tmp_path / 'theirs.csv'), '--out', str(tmp_path / 'e'), '--quiet']
    assert cli(args + ['--poses', 'colmap']) == 0
    rows = pd.read_csv(tmp_path / 'e' / 'rows.csv', keep_default_na=False)
    assert (rows['poses_by'] == 'colmap').all() and (rows['error'] == '').all() and len(rows) == 3
    capsys.readouterr()
    assert cli(args + ['--poses', 'colmap']) == 0 and 'scored 0 video(s) now' in capsys.readouterr().out
    assert cli(args + ['--poses', 'builtin']) == 0 and 'scored 3 video(s) now' in capsys.readouterr().out
    assert cli(args + ['--poses', 'vipe']) == 2 and 'one of builtin, colmap' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, 'pycolmap', None)              # not installed
    assert cli(args + ['--poses', 'colmap']) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install -e ".[eval]"' in err and len(err.splitlines()) == 1


def _save_tiny_clip(d):
    "A tiny random CLIP (transformers CLIPModel and CLIPTokenizer) saved as a downloaded one is."
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    d.mkdir()
    (d / 'vocab.json').write_text(json.dumps({'<|startoftext|>': 0, '<|endoftext|>': 1, 'a</w>': 2, 's': 3, 'c': 4, 'e': 5, 'n': 6}))
    (d / 'merges.txt').write_text('#version: 0.2\n')
    CLIPTokenizer(str(d / 'vocab.json'), str(d / 'merges.txt')).save_pretrained(d)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=dict(vocab_size=8, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                          pad_token_id=1, **small),
                         vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=8)).save_pretrained(d)


def test_clip_scores_with_local_weights(results, tmp_path, capsys):
    "--clip-weights DIR: CLIP-T from the sidecar's prompt, CLIP-F from consecutive frames; a CSV without prompts has no CLIP-T."
    d, scene = results
    _save_tiny_clip(tmp_path / 'clip')
    (tmp_path / 't.csv').write_text(f"video,trajectory\n{d / 'ours' / 'cam03.mp4'},pan_left\n")
    assert cli(['evaluate', str(d / 'ours'), str(tmp_path / 't.csv'), '--out', str(tmp_path / 'e'),
                '--clip-weights', str(tmp_path / 'clip'), '--quiet']) == 0
    assert '| CLIP-T ↑ | CLIP-F ↑ |' in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / 'e' / 'rows.csv').set_index('method')
    assert rows.loc['infcam', 'CLIP-T'].notna().all() and (rows['CLIP-F'].between(-100, 100.01)).all()
    assert math.isnan(rows.loc['t', 'CLIP-T'])                   # no prompt column
    assert cli(['evaluate', str(d / 'ours'), '--out', str(tmp_path / 'e2'), '--clip-weights', str(tmp_path / 'none')]) == 2
    assert 'does not exist' in capsys.readouterr().err

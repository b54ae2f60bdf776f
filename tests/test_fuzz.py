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

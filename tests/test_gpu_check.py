"""The GPU check (`bench/gpu.py`) runs its CPU path with the tiny preset, so it cannot rot before a GPU is lent."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_path(tmp_path):
    tmp = tmp_path / 'tmp'; tmp.mkdir()
    p = subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu.py'), '--preset', 'tiny', '--size', '9x32x48', '--steps', '2',
                        '--out', str(tmp_path)], capture_output=True, text=True, timeout=900, env={**os.environ, 'TMPDIR': str(tmp)})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert not list(tmp.glob('gpucheck-*')), list(tmp.iterdir())       # the training runs' temporary folders are removed
    res = json.loads((tmp_path / 'gpu_check.json').read_text())
    s = res['sections']
    assert set(s) == {'forward', 'intrinsics', 'generate', 'train', 'mini'} and not any('error' in v for v in s.values())
    sdpa = next(r for r in s['forward']['rows'] if r['backend'] == 'sdpa')
    assert sdpa['seconds'] > 0 and sdpa['tflops'] > 0
    assert all(m in s['generate']['table'] for m in ('resident', 'model_offload', 'block_offload'))
    ddp = next(r for r in s['train']['rows'] if r['strategy'] == 'ddp')
    assert ddp['resume_ok'] and ddp['resumed_from'] == 3
    mini = s['mini']
    assert mini['seconds_per_train_step'] > 0 and mini['train_steps_per_10_min'] > 0 and mini['trainable'] > 0
    md = (tmp_path / 'gpu_check.md').read_text()
    assert '## forward' in md and '| ddp |' in md and 'train_steps_per_10_min' in md

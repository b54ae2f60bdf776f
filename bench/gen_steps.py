#!/usr/bin/env python
"""How much of a trained model's score is the sampler's? Score its generations at several Euler step counts.

    python bench/gen_steps.py BENCH_DIR [--runs full-s0] [--steps 1 3 10] [--ckpt PATH]

BENCH_DIR is an `infcam bench` folder (its `bench.json`, data and trained runs). Each run's last checkpoint generates
every evaluation pair with each step count; one step returns the model's one-step `x0` estimate from pure noise (the
mean of what it predicts, not a sample), more steps draw a sample. PSNR rewards the mean: a model that is unsure of
the detail loses PSNR by sampling it, so the spread between the rows is what sampling costs this model. Prints a
markdown table with the baselines (copy_source, homography_warp, first_frame_warp: their scores in BENCH_DIR/eval,
else scored here) and writes
BENCH_DIR/gen_steps/{run}-g{n}.csv (kept: running again only adds what is missing) and BENCH_DIR/gen_steps.png.
"""
import argparse, dataclasses, json
from pathlib import Path

import pandas as pd
import torch

from infcam.benchmark import BenchConfig, TrainedMethod, eval_pairs, evaluate
from infcam.checkpoints import list_checkpoints
from infcam.core import InfcamError

SPLITS = ('train', 'shared', 'different')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('bench'); ap.add_argument('--runs', nargs='*', default=['full-s0'], help='run folders under BENCH/runs')
    ap.add_argument('--ckpt', nargs='+', default=[], help='checkpoints to score as well (any run of the same setup)')
    ap.add_argument('--steps', nargs='+', type=int, default=[1, 3, 10]); ap.add_argument('--threads', type=int, default=1, help='CPU threads (1: the numbers of the README)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bench = Path(a.bench)
    if not (bench / 'bench.json').is_file(): raise SystemExit(f"error: {bench} is not an infcam bench folder (no bench.json)")
    cfg = BenchConfig(**json.loads((bench / 'bench.json').read_text()))
    data = dict(train=bench / 'data' / 'train', test=bench / 'data' / 'test')
    pairs = [p for p in eval_pairs(data['test'], cfg, data['train']) if p.split in SPLITS]
    cks = {}
    for r in a.runs:
        found = list_checkpoints(bench / 'runs' / r / 'ckpt')
        if not found: raise SystemExit(f"error: no checkpoint in {bench / 'runs' / r / 'ckpt'}")
        cks[r] = found[-1]
    cks.update({f'{Path(c).parents[1].name}@{Path(c).name}': Path(c) for c in a.ckpt})
    rows = []
    for name, ck in cks.items():
        for n in a.steps:
            c = dataclasses.replace(cfg, gen_steps=n)
            try: df = evaluate(name, TrainedMethod(ck, c, c.gen_device), pairs, c, bench / 'gen_steps' / f"{name.replace('@', '-')}-g{n}.csv", progress=True)
            except InfcamError as e: raise SystemExit(f"error: {e}")
            rows.append(df.assign(method=name, steps=n))
    from infcam import benchmark
    for b in benchmark.BASELINES:                              # the benchmark's scores, else scored here
        f = bench / 'eval' / f'{b}-s0.csv'
        df = pd.read_csv(f) if f.is_file() else evaluate(b, getattr(benchmark, b), pairs, cfg, bench / 'gen_steps' / f'{b}.csv')
        rows.append(df.assign(steps=0))
    df = pd.concat(rows, ignore_index=True)
    df = df[df['split'].isin(SPLITS)]
    t = df.groupby(['method', 'steps', 'split'], sort=False).agg(PSNR=('PSNR', 'mean'), SSIM=('SSIM', 'mean'),
                                                                 registered=('registered', 'mean'), RotErr=('RotErr', 'mean'))
    t = t.unstack('split')
    print(f"{cfg.preset} benchmark ({cfg.steps} training steps unless the name says), {cfg.num_frames}x{cfg.height}x{cfg.width}; gen steps —: a baseline\n")
    print('| method | gen steps | ' + ' | '.join(f'PSNR {s}' for s in SPLITS) + ' | SSIM shared | registered shared | RotErr shared |')
    print('|---|---|' + '---|' * (len(SPLITS) + 3))
    for (m, n), r in t.iterrows():
        print(f"| {m} | {n or '—'} | " + ' | '.join(f"{r[('PSNR', s)]:.2f}" for s in SPLITS) +
              f" | {r[('SSIM', 'shared')]:.3f} | {r[('registered', 'shared')]:.2f} | {r[('RotErr', 'shared')]:.2f} |")
    plot(t, a.steps, bench / 'gen_steps.png', cfg)


BASELINE_STYLE = {'copy_source': dict(ls='--', color='gray'), 'homography_warp': dict(ls='--', color='k'),
                  'first_frame_warp': dict(ls=':', color='k')}


def plot(t, steps, path, cfg):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, s in zip(axs, ('shared', 'different')):
        for m in dict.fromkeys(t.index.get_level_values(0)):
            r = t.loc[m]
            if 0 in r.index: ax.axhline(r.loc[0, ('PSNR', s)], lw=1, label=m, **BASELINE_STYLE.get(m, dict(ls='--', color='k')))
            else: ax.plot(r.index, r[('PSNR', s)], 'o-', label=m)
        ax.set(xscale='log', xticks=steps, xticklabels=[str(n) for n in steps], xlabel='Euler steps of the generation',
               title=f'held-out {s}'); ax.grid(alpha=.3)
    axs[0].set_ylabel('PSNR (dB)')
    handles, labels = axs[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f'{cfg.preset} benchmark, {cfg.num_frames}x{cfg.height}x{cfg.width}: what sampling costs a trained model in PSNR', fontsize=10)
    rows = -(-len(labels) // 3)
    fig.set_size_inches(9, 3.4 + 0.25 * rows); fig.tight_layout(rect=(0, 0.07 * rows + 0.02, 1, 1))
    fig.savefig(path, dpi=110); plt.close(fig)
    print(f"\nplot: {path}")


if __name__ == '__main__': main()

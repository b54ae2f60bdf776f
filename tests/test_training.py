import shutil
import warnings
from pathlib import Path

import pytest
import torch

import lightning  # noqa: F401  (a requirement: fail, never skip, if it is missing)
import lightning as L

from infcam.core import InfcamError
from infcam.data import CachedPairDataset, prepare
from infcam.models import InfCamDiT
from infcam.pipeline import RandomTextEncoder
from infcam.synthetic import make_dataset
from infcam.training import (InfCamModule, StepSampler, collate, eval_loss, fit, lightning_strategy, list_checkpoints,
                             load_trained, plot_loss, prune_checkpoints, read_checkpoint, read_losses, save_checkpoint)
from infcam.vae import PixelCodec

warnings.filterwarnings("ignore", ".*does not have many workers.*")
F, H, W = 5, 32, 48
TRAINED = ("cam_encoder", "zero_conv", "self_attn_pre", "modulation0")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    "One synthetic scene, PixelCodec latents (192 channels) cached; captions encoded on the fly."
    root = tmp_path_factory.mktemp("mcv")
    make_dataset(root, 1, num_frames=F, height=H, width=W, progress=False, num_objects=2, num_moving=0)
    prepare(root, PixelCodec(), None, num_frames=F, progress=False)
    return CachedPairDataset(root, codec="pixel", text=False, num_frames=F)


def module(lr=1e-3, **kw):
    return InfCamModule("tiny", seed=0, lr=lr, in_dim=192, out_dim=192, text_len=16, verbose=False,
                        text_encoder=RandomTextEncoder(64, text_len=16), **kw)


def test_one_step_changes_only_trainable(ds, tmp_path):
    m = module()
    assert sorted({n.split(".")[2] for n in m.trainable}) == sorted(TRAINED)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    fit(m, ds, tmp_path / "run", max_steps=1, batch_size=2, plot=False)
    after = m.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(m.trainable)            # every trained tensor moved (weight decay alone moves them all)...
    assert all(any(t in k for t in TRAINED) for k in changed)   # ...and nothing of the backbone did
    assert m.step == 1


def test_loss_goes_down(ds, tmp_path):
    m = module(lr=3e-3)
    batch = collate([ds[0], ds[0]])
    l0 = eval_loss(m, batch)
    fit(m, ds, tmp_path / "run", max_steps=30, batch_size=2, every=0, plot=True)
    l1 = eval_loss(m, batch)
    assert l1 < 0.9 * l0, (l0, l1)
    steps, losses = read_losses(tmp_path / "run")
    assert list(steps) == list(range(30)) and (losses > 0).all()
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert list((tmp_path / "run" / "logs" / "tb").glob("version_*/events.out.tfevents*"))   # TensorBoard too


class Kill(L.Callback):
    "Simulate a crash right after optimizer step `at`."
    def __init__(self, at): self.at = at
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.step == self.at: raise RuntimeError("killed")


def test_resume_after_kill_equals_straight_run(ds, tmp_path):
    kw = dict(batch_size=2, accumulate=2, every=2, keep_last=2, plot=False)
    a = fit(module(), ds, tmp_path / "a", max_steps=6, **kw)
    with pytest.raises(RuntimeError, match="killed"):
        fit(module(), ds, tmp_path / "b", max_steps=6, callbacks=[Kill(3)], **kw)
    ck = tmp_path / "b" / "ckpt"
    assert [p.name for p in list_checkpoints(ck)] == ["step00000002"]
    (ck / ".step00000004.abc.tmp").mkdir()                     # a save the kill cut short
    (ck / "step00000004").mkdir()                              # a folder without its files is not a checkpoint
    b = module()
    assert b.start_step == 0
    fit(b, ds, tmp_path / "b", max_steps=6, **kw)
    assert b.step == a.step == 6
    for n in a.trainable:
        assert torch.equal(a.model.state_dict()[n], b.model.state_dict()[n]), n
    ta, _, sa = read_checkpoint(tmp_path / "a" / "ckpt" / "step00000006")
    tb, _, sb = read_checkpoint(tmp_path / "b" / "ckpt" / "step00000006")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    ea, eb = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k]["exp_avg_sq"], eb[k]["exp_avg_sq"]) for k in ea)
    assert [p.name for p in list_checkpoints(ck)] == ["step00000004", "step00000006"]
    assert not list(ck.glob(".*"))
    # a finished run resumed to the same step does nothing
    c = fit(module(), ds, tmp_path / "b", max_steps=6, **kw)
    assert c.step == 6 and torch.equal(c.model.state_dict()[a.trainable[0]], a.model.state_dict()[a.trainable[0]])


def test_checkpoint_reloads_for_inference(ds, tmp_path):
    m = fit(module(lr=1e-2), ds, tmp_path / "run", max_steps=2, batch_size=1, every=1, plot=False)
    ck = list_checkpoints(tmp_path / "run" / "ckpt")[-1]
    tensors, meta, st = read_checkpoint(ck)                    # state.pt reads with weights_only=True
    assert set(tensors) == set(m.trainable) and st["step"] == 2 and meta["step"] == "2"
    model = load_trained(ck / "trainable.safetensors")
    assert isinstance(model, InfCamDiT) and not model.training
    b = m.prepare_batch(collate([ds[0]]))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b["target"].shape, generator=g)
    args = (x, b["source"], torch.tensor([500.]), b["context"], b["K_src"], b["K_tgt"], b["extrinsics"])
    m.model.eval()
    with torch.no_grad(): ref, out = m.model(*args), model(*args)
    assert torch.equal(ref, out)
    with torch.no_grad(): untrained = module().model.eval()(*args)
    assert not torch.allclose(ref, untrained)                  # the trained tensors matter


def test_retention(tmp_path):
    m = module()
    for s in range(1, 8):
        save_checkpoint(m, tmp_path, s)
        prune_checkpoints(tmp_path, keep_last=2, keep_every=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step00000003", "step00000006", "step00000007"]


def test_sampler_is_step_indexed():
    s = StepSampler(7, 3, seed=1, rank=1, world=2)
    it = iter(StepSampler(7, 3, seed=1, start=4, rank=1, world=2))
    assert next(it) == s.positions(4) and next(it) == s.positions(5)
    r0 = StepSampler(7, 3, seed=1, rank=0, world=2)
    assert {p for k in range(7) for p in r0.positions(k) + s.positions(k)} == {(e, i) for e in range(6) for i in range(7)}


def test_strategies(monkeypatch):
    assert lightning_strategy("auto") == "auto"
    with pytest.raises(InfcamError, match="unknown strategy"):
        lightning_strategy("fsdp")
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "deepspeed" else real(n, *a))
    with pytest.raises(InfcamError, match="needs DeepSpeed"):
        lightning_strategy("deepspeed_stage_1")


def test_missing_text_encoder(ds):
    m = InfCamModule("tiny", in_dim=192, out_dim=192, verbose=False)
    with pytest.raises(InfcamError, match="no cached text states"):
        m.loss(collate([ds[0]]))


def test_train_cli(ds, tmp_path):
    import subprocess, sys
    from infcam.train import main
    root = ds.index.roots[0]
    cmd = [str(root), "--run-dir", str(tmp_path / "run"), "--codec", "pixel", "--random-text", "--num-frames", str(F),
           "--every", "2", "--num-workers", "0"]
    assert main(cmd + ["--max-steps", "2"]) == 0
    assert main(cmd + ["--max-steps", "4", "--lr", "1e-3"]) == 0            # resumes from step 2
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "ckpt")] == ["step00000002", "step00000004"]
    assert main(cmd[:1] + ["--run-dir", str(tmp_path / "x"), "--codec", "wanvae", "--max-steps", "1", "--num-frames", str(F)]) == 2
    r = subprocess.run([sys.executable, "-m", "infcam.train", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--max-steps" in r.stdout


def test_build_from_base_module(tmp_path):
    from infcam.models import WanConfig, WanDiT
    from infcam.training import build_model
    from infcam.weights import save_safetensors
    torch.manual_seed(3)
    wan = WanDiT(WanConfig.preset("tiny"))
    save_safetensors(wan.state_dict(), tmp_path / "wan.safetensors")
    a = InfCamModule("tiny", base=wan, verbose=False)
    b = InfCamModule("tiny", base=tmp_path / "wan.safetensors", verbose=False, gradient_checkpointing=True)
    assert torch.equal(a.model.state_dict()["blocks.0.self_attn_pre.q.weight"], wan.state_dict()["blocks.0.self_attn.q.weight"])
    assert torch.equal(b.model.state_dict()["blocks.1.ffn.0.weight"], wan.state_dict()["blocks.1.ffn.0.weight"])
    assert b.config.gradient_checkpointing and b.base == str(tmp_path / "wan.safetensors")
    ck = save_checkpoint(b, tmp_path / "ck", 5)
    assert torch.equal(load_trained(ck).state_dict()["blocks.1.ffn.0.weight"], wan.state_dict()["blocks.1.ffn.0.weight"])
    with pytest.raises(InfcamError, match="in memory"):
        load_trained(save_checkpoint(a, tmp_path / "ck2", 5))
    with pytest.raises(InfcamError, match="cannot change in_dim"):
        build_model("tiny", base=a.model, in_dim=192)


# ---- nbs/train.ipynb as papermill runs it: parameters checked, training launched as a script process ----
NB = Path(__file__).resolve().parents[1] / "nbs" / "train.ipynb"


def _papermill(tmp_path, **params):
    import papermill as pm
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(NB), str(out), parameters=params, cwd=str(NB.parent), progress_bar=False,
                        kernel_name="python3")
    return out


def test_train_notebook_two_processes(tmp_path, monkeypatch):
    import json
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run = tmp_path / "run"
    _papermill(tmp_path, devices=2, max_steps=6, every=3, run_dir=str(run))
    assert [p.name for p in list_checkpoints(run / "ckpt")] == ["step00000003", "step00000006"]
    steps, losses = read_losses(run)
    assert list(steps) == list(range(6)) and (losses > 0).all()
    params = json.loads((run / "notebook_params.json").read_text())
    assert params["devices"] == 2 and "--devices" in params["command"] and "--num-nodes" in params["command"]
    ev = json.loads((run / "eval_loss.json").read_text())
    assert ev["step"] == 6 and ev["after"] != ev["before"]
    assert (run / "loss.png").stat().st_size > 1000


@pytest.mark.parametrize("params,msg", [(dict(devise=2), "unknown parameter devise"),
                                        (dict(devices="two"), "parameter devices must be"),
                                        (dict(max_steps="6"), "parameter max_steps must be int")])
def test_train_notebook_rejects_bad_parameters(tmp_path, params, msg):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match=msg) as e:
        _papermill(tmp_path, run_dir=str(tmp_path / "run"), **params)
    assert e.value.ename == "InfcamError"
    assert not (tmp_path / "run").exists()                      # nothing ran


def test_train_cli_num_nodes(ds, tmp_path, monkeypatch):
    import infcam.training
    from infcam.train import build_parser, main
    assert build_parser().parse_args(["d", "--run-dir", "r", "--max-steps", "1", "--num-nodes", "2"]).num_nodes == 2
    seen = {}
    class Stop(Exception): pass
    def fake_trainer(**kw):                      # capture what fit gives Lightning, without starting 3 nodes
        seen.update(kw); raise Stop()
    monkeypatch.setattr(infcam.training.L, "Trainer", fake_trainer)
    with pytest.raises(Stop):
        main([str(ds.index.roots[0]), "--run-dir", str(tmp_path / "n3"), "--codec", "pixel", "--random-text",
              "--num-frames", str(F), "--max-steps", "1", "--num-nodes", "3"])
    assert seen["num_nodes"] == 3
    monkeypatch.undo()
    assert main([str(ds.index.roots[0]), "--run-dir", str(tmp_path), "--max-steps", "1", "--num-nodes", "0"]) == 2

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import lightning  # noqa: F401  (a requirement: fail, never skip, if it is missing)
import lightning as L

from infcam.core import InfcamError
from infcam.cache import CachedPairDataset, prepare
from infcam.models import InfCamDiT
from infcam.pipeline import RandomTextEncoder
from infcam.synthetic import make_dataset
from infcam.checkpoints import list_checkpoints, load_trained, read_checkpoint, save_checkpoint
from infcam.training import InfCamModule, StepSampler, collate, eval_loss, fit, lightning_strategy, read_losses
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


def test_train_cli(ds, tmp_path, capsys, monkeypatch):
    import subprocess, sys
    from infcam.train import main
    root = ds.index.roots[0]
    cmd = [str(root), "--run-dir", str(tmp_path / "run"), "--codec", "pixel", "--random-text", "--num-frames", str(F),
           "--every", "2", "--num-workers", "0"]
    assert main(cmd + ["--max-steps", "2"]) == 0
    assert main(cmd + ["--max-steps", "4"]) == 0            # resumes from step 2 (other settings would be refused)
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "ckpt")] == ["step00000002", "step00000004"]
    assert main(cmd[:1] + ["--run-dir", str(tmp_path / "x"), "--codec", "wanvae", "--max-steps", "1", "--num-frames", str(F)]) == 2
    # a base DiT that takes other latents (the tiny Wan preset: 16 channels) against the 192-channel pixel cache: one line
    from infcam.models import WanConfig, WanDiT
    from infcam.weights import save_safetensors
    save_safetensors(WanDiT(WanConfig.preset("tiny")).state_dict(), tmp_path / "wan16.safetensors")
    import infcam.weights
    def no_loading(*a, **k): raise AssertionError("the base weights were loaded before the channels were checked")
    with monkeypatch.context() as mp:                      # the check reads the file's header, not its weights
        mp.setattr(infcam.weights, "load_dit", no_loading)
        assert main(cmd + ["--max-steps", "1", "--run-dir", str(tmp_path / "y"), "--base", str(tmp_path / "wan16.safetensors")]) == 2
    assert "latents have 192 channels; the model of --base takes 16" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "infcam.train", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--max-steps" in r.stdout


def test_build_from_base_module(tmp_path, monkeypatch):
    from infcam.models import WanConfig, WanDiT
    from infcam.checkpoints import build_model
    from infcam.weights import save_safetensors
    torch.manual_seed(3)
    wan = WanDiT(WanConfig.preset("tiny"))
    save_safetensors(wan.state_dict(), tmp_path / "wan.safetensors")
    a = InfCamModule("tiny", base=wan, verbose=False)
    b = InfCamModule("tiny", base=tmp_path / "wan.safetensors", verbose=False, gradient_checkpointing=True)
    assert torch.equal(a.model.state_dict()["blocks.0.self_attn_pre.q.weight"], wan.state_dict()["blocks.0.self_attn.q.weight"])
    assert torch.equal(b.model.state_dict()["blocks.1.ffn.0.weight"], wan.state_dict()["blocks.1.ffn.0.weight"])
    assert b.model.gradient_checkpointing and b.base == str(tmp_path / "wan.safetensors")
    ck = save_checkpoint(b, tmp_path / "ck", 5)
    assert torch.equal(load_trained(ck).state_dict()["blocks.1.ffn.0.weight"], wan.state_dict()["blocks.1.ffn.0.weight"])
    # the base moves into the cache's backbones (as a shipped backbone does when the package is reinstalled elsewhere):
    # the checkpoint finds it by its SHA-256, and a run resumes with the moved file
    from infcam.training import check_resumable, run_config
    monkeypatch.setenv("INFCAM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "run").mkdir(); (tmp_path / "run" / "config.json").write_text(json.dumps(run_config(b)))
    (tmp_path / "cache" / "backbones").mkdir(parents=True)
    os.replace(tmp_path / "wan.safetensors", tmp_path / "cache" / "backbones" / "wan.safetensors")
    assert torch.equal(load_trained(ck).state_dict()["blocks.1.ffn.0.weight"], wan.state_dict()["blocks.1.ffn.0.weight"])
    moved = InfCamModule("tiny", base=tmp_path / "cache" / "backbones" / "wan.safetensors", verbose=False)
    check_resumable(tmp_path / "run", run_config(moved))
    # a run recorded before hashes named its base as given (relative to where it ran): it still resumes on that file
    monkeypatch.chdir(tmp_path)
    old = run_config(moved); old.pop("base_sha256"); old["base"] = "cache/backbones/wan.safetensors"
    (tmp_path / "old").mkdir(); (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    check_resumable(tmp_path / "old", run_config(moved))
    other = WanDiT(WanConfig.preset("tiny")); save_safetensors(other.state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(InfcamError, match="other settings"):
        check_resumable(tmp_path / "run", run_config(InfCamModule("tiny", base=tmp_path / "other.safetensors", verbose=False)))
    os.remove(tmp_path / "cache" / "backbones" / "wan.safetensors")
    with pytest.raises(InfcamError, match="trained on .* not in"):
        load_trained(ck)
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
    out = _papermill(tmp_path, devices=2, max_steps=6, every=3, run_dir=str(run))
    text = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", []))
    assert text.count("trained to step 6; last checkpoint") == 1          # printed by global rank 0 only
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


# ---- Weights & Biases ----
def test_wandb_offline(ds, tmp_path, monkeypatch):
    import wandb         # a dev requirement: fail, never skip, if it is missing
    for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"): monkeypatch.setenv(k, str(tmp_path / k.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline"); monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "wbrun"
    fit(module(), ds, run, max_steps=2, batch_size=1, every=0, plot=False, wandb="infcam-test")
    wandb.teardown()     # W&B's service process writes the .wandb file on its own time: wait for it (it once held
    runs = list((run / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))   # only its header when read at once)
    assert len(runs) == 1
    rid = (run / "logs" / "wandb_id").read_text().strip()
    assert runs[0].name == f"run-{rid}.wandb"
    data = runs[0].read_bytes()
    steps, losses = read_losses(run)                        # the CSV log of the same run
    assert list(steps) == [0, 1] and b"train/loss" in data
    assert all(repr(float(v)).encode() in data for v in losses)    # the logged values themselves
    fit(module(), ds, run, max_steps=3, batch_size=1, every=0, plot=False, wandb="infcam-test")   # resumes the W&B run
    assert (run / "logs" / "wandb_id").read_text().strip() == rid
    assert all(p.name == f"run-{rid}.wandb" for p in (run / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_wandb_missing(ds, tmp_path, monkeypatch):
    import importlib.util
    from infcam.train import main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(InfcamError, match="pip install wandb"):
        fit(module(), ds, tmp_path / "run", max_steps=1, plot=False, wandb="proj")
    assert not (tmp_path / "run").exists()                      # nothing started
    assert main([str(ds.index.roots[0]), "--run-dir", str(tmp_path / "cli"), "--codec", "pixel", "--random-text",
                 "--num-frames", str(F), "--max-steps", "1", "--wandb", "proj"]) == 2


# ---- model ablation flags of the command line ----
def test_train_cli_warp_flags(ds, tmp_path, monkeypatch):
    import infcam.train
    from infcam.train import build_parser, main
    a = build_parser().parse_args(["d", "--run-dir", "r", "--max-steps", "1"])
    assert a.warp_convention is None and not a.no_warp_module
    seen = {}
    real = InfCamModule
    def spy(*args, **kw):
        seen.clear(); seen.update(kw); return real(*args, **kw)
    monkeypatch.setattr("infcam.training.InfCamModule", spy)
    cmd = [str(ds.index.roots[0]), "--codec", "pixel", "--random-text", "--num-frames", str(F), "--max-steps", "1",
           "--num-workers", "0"]
    assert main(cmd + ["--run-dir", str(tmp_path / "a")]) == 0
    assert "warp_module" not in seen and "warp_convention" not in seen     # not passed unless given
    assert main(cmd + ["--run-dir", str(tmp_path / "b"), "--warp-convention", "exact", "--no-warp-module"]) == 0
    assert seen["warp_convention"] == "exact" and seen["warp_module"] is False
    ck = list_checkpoints(tmp_path / "b" / "ckpt")[-1]
    cfg = load_trained(ck).config
    assert cfg.warp_convention == "exact" and cfg.warp_module is False
    assert not any("zero_conv" in n for n in read_checkpoint(ck)[0])       # no warping module: nothing to train there


# ---- DeepSpeed ZeRO checkpoints, exercised on the CPU (Lightning's DeepSpeedStrategy needs CUDA) ----
ZERO_SCRIPT = r'''
import os, sys, types, warnings
from pathlib import Path
os.environ.update(DS_ACCELERATOR='cpu', MASTER_ADDR='127.0.0.1', MASTER_PORT=sys.argv[3], RANK='0', WORLD_SIZE='1',
                  LOCAL_RANK='0', LOCAL_WORLD_SIZE='1')
warnings.filterwarnings('ignore')
import torch, deepspeed
from infcam.cache import CachedPairDataset
from infcam.pipeline import RandomTextEncoder
from infcam.checkpoints import list_checkpoints, read_checkpoint
from infcam.training import InfCamModule, collate
from infcam.zero import load_zero_shards, save_zero_checkpoint, zero_full_param
deepspeed.init_distributed(dist_backend='gloo', verbose=False)
root, out = Path(sys.argv[1]), Path(sys.argv[2])
batch = collate([CachedPairDataset(root, codec='pixel', text=False, num_frames=5)[0]])

def module():
    m = InfCamModule('tiny', seed=0, lr=1e-2, in_dim=192, out_dim=192, text_len=16, verbose=False,
                     text_encoder=RandomTextEncoder(64, text_len=16))
    m.forward = m.loss                                     # the engine's forward: the training loss
    return m

def engine(m, stage):
    cfg = dict(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, zero_allow_untested_optimizer=True,
               zero_optimization=dict(stage=stage, stage3_param_persistence_threshold=0), gradient_clipping=0.0)
    eng, *_ = deepspeed.initialize(model=m, optimizer=m.configure_optimizers()['optimizer'], config=cfg,
                                   model_parameters=[p for p in m.parameters() if p.requires_grad])
    return eng

def steps(eng, ks):
    for k in ks:
        loss = eng(batch, torch.Generator().manual_seed(k)); eng.backward(loss); eng.step()

def fake_trainer(eng):
    strat = types.SimpleNamespace(deepspeed_engine=eng, barrier=lambda *a, **k: None,
                                  reduce_boolean_decision=lambda d, all=True: d)
    return types.SimpleNamespace(strategy=strat, global_rank=0, is_global_zero=True, world_size=1)

def moments(eng):
    sd = eng.optimizer.state_dict()
    st = sd.get('base_optimizer_state') or sd['optimizer_state_dict']
    st = st['state'] if isinstance(st, dict) else {i: s for i, s in enumerate(st)}
    return {i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for i, s in st.items()}

for stage in map(int, sys.argv[4].split(',')):
    a = module(); ea = engine(a, stage)
    full = {n: p.shape for n, p in module().model.named_parameters()}
    steps(ea, [0, 1])
    ea.optimizer.loss_scaler.cur_scale = 4.0               # a loss scale to restore (a power of 2: exact)
    ck = save_zero_checkpoint(fake_trainer(ea), a, out / f'z{stage}', 2)
    assert list_checkpoints(out / f'z{stage}') == [ck] and not list((out / f'z{stage}').glob('.*'))
    tensors, meta, st = read_checkpoint(ck)
    assert st['zero'] == dict(world=1, stage=stage) and st['optimizer'] == {}
    shard = torch.load(ck / 'optim_rank0.pt', weights_only=True)      # plain tensors and containers
    assert shard['engine']['global_steps'] == 2 and shard['loss_scaler']['cur_scale'] == 4.0
    params = dict(a.model.named_parameters())
    assert set(tensors) == set(a.trainable) and all(tensors[n].shape == full[n] for n in tensors)   # gathered
    if stage == 3: assert all(params[n].data.numel() == 0 for n in tensors)       # the live parameters are shards
    assert all(torch.equal(tensors[n], zero_full_param(params[n])) for n in tensors)
    if stage == 3:
        with deepspeed.zero.GatheredParameters([params[n] for n in tensors]):
            assert all(torch.equal(tensors[n], params[n].data) for n in tensors)
    fresh = module().trainable_state()
    assert any(not torch.equal(tensors[n], fresh[n]) for n in tensors)   # trained values, not the initial ones
    # resume into a fresh module and engine, then both take the same two steps
    b = module(); b.resume_from(ck); eb = engine(b, stage)
    assert b._zero_ckpt == ck
    b.trainer = fake_trainer(eb); b.on_train_start(); b.trainer = None        # what fit does once the engine exists
    assert b._zero_ckpt is None
    assert eb.optimizer.loss_scaler.cur_scale == 4.0 and eb.global_steps == 2
    ma, mb = moments(ea), moments(eb)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[i][k], mb[i][k]) for i in ma for k in ma[i])
    c = module(); c.resume_from(ck, optimizer=False); ec = engine(c, stage)     # same weights, fresh optimizer
    for e in (ea, eb, ec): steps(e, [2, 3])
    ta, tb, tc = a.trainable_state(), b.trainable_state(), c.trainable_state()
    assert all(torch.equal(ta[n], tb[n]) for n in ta), stage
    assert not all(torch.equal(ta[n], tc[n]) for n in ta), stage       # the optimizer state matters
    print('stage', stage, 'ok', flush=True)
'''


def test_zero_checkpoint_round_trip(ds, tmp_path):
    """DeepSpeed's ZeRO optimizer on the CPU (gloo, one process), stages 1, 2 and 3: every rank's shard is saved plain
    (weights_only), the trained tensors are the gathered float32 masters (stage 3: from parameter shards), and a fresh
    engine that loads the shards continues exactly as the original, unlike one with a fresh optimizer."""
    import importlib.util, socket, subprocess, sys
    if importlib.util.find_spec("deepspeed") is None: pytest.skip("DeepSpeed is optional (deepspeed_requirements)")
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0)); port = sk.getsockname()[1]
    (tmp_path / "zero_rt.py").write_text(ZERO_SCRIPT)
    r = subprocess.run([sys.executable, str(tmp_path / "zero_rt.py"), str(ds.index.roots[0]), str(tmp_path / "out"),
                        str(port), "1,2,3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [l for l in r.stdout.splitlines() if l.endswith(" ok")] == ["stage 1 ok", "stage 2 ok", "stage 3 ok"]


def test_train_backbone_trains_every_weight(ds, tmp_path):
    m = module(train_backbone=True)
    assert set(m.trainable) == {n for n, _ in m.model.named_parameters()}
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    fit(m, ds, tmp_path / "run", max_steps=1, batch_size=2, plot=False)
    after = m.model.state_dict()
    assert {k for k in before if not torch.equal(before[k], after[k])} == set(m.trainable)
    m2 = load_trained(list_checkpoints(tmp_path / "run" / "ckpt")[-1])       # the whole model comes back
    assert all(torch.equal(m2.state_dict()[k], after[k]) for k in after)
    nw = module(train_backbone=True, warp_module=False)                   # zero_conv has nothing to learn there
    assert not any(".zero_conv." in n for n in nw.trainable) and any(".self_attn.q." in n for n in nw.trainable)

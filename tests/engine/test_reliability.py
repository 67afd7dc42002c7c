"""Preemption, crashes in the middle of a checkpoint write, non-finite losses: nothing good is lost, resume is exact.

Faults are injected with SDMP_FAULT (sdmp_fast/engine/preempt.py), so every test is deterministic.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distributed import launch
from sdmp_fast.engine import checkpoint as ckpt
from sdmp_fast.pretrain import main, run

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
COMMON = ["run.max_steps=6", "run.knn=false", "run.log_every=100"]  # 36 images / batch 8: 4 steps per epoch


def _args(data, out, *extra):
    return ["--config", SMOKE, "--data", str(data), "--out", str(out), *COMMON, *extra]


def _params(out):
    return ckpt.load(ckpt.latest_checkpoint(out))["method"]


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(image_folder, tmp_path, monkeypatch):
    run(_args(image_folder, tmp_path / "full"), progress=False)
    monkeypatch.setenv("SDMP_FAULT", "sigterm@2")
    s1 = run(_args(image_folder, tmp_path / "part"), progress=False)
    assert s1["preempted"] == "SIGTERM" and s1["steps"] == 2 and "export" not in s1
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "part")] == [ckpt.checkpoint_path("x", 2).name]
    monkeypatch.delenv("SDMP_FAULT")
    assert main(_args(image_folder, tmp_path / "part", "--resume", "auto")) == 0
    full, part = _params(tmp_path / "full"), _params(tmp_path / "part")
    assert all(torch.equal(v, part[k]) for k, v in full.items())


def test_ctrl_c_stops_like_sigterm_with_a_checkpoint_and_one_line(tmp_path, monkeypatch, capfd):
    """SIGINT (Ctrl-C) after step 2: the checkpoint of step 2, one line each for the stop and the way on, exit 130
    (a shell's Ctrl-C status), no traceback; --resume auto continues from step 2."""
    args = ["--config", SMOKE, "--loader", "synthetic", "--out", str(tmp_path / "r"), "run.max_steps=4"]
    monkeypatch.setenv("SDMP_FAULT", "sigint@2")
    assert main(args) == 130
    err = capfd.readouterr().err  # the handler writes to the file descriptor
    assert "[run] Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to exit at once)" in err
    assert "[run] stopped after step 2 of 4 (interrupted (Ctrl-C)); checkpoint " in err and "Traceback" not in err
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r")] == [ckpt.checkpoint_path("x", 2).name]
    monkeypatch.delenv("SDMP_FAULT")
    assert main([*args, "--resume", "auto"]) == 0
    assert f"checkpoints/{ckpt.checkpoint_path('x', 2).name} at step 2" in capfd.readouterr().err


def test_a_second_ctrl_c_exits_at_once_and_forked_workers_ignore_both():
    import signal

    from sdmp_fast.engine.preempt import INTERRUPTED, Preemption
    p = Preemption()
    p.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert p.poll() and p.signal_name == "SIGINT"
        pid = os.fork()  # a loader worker forked inside the loop (it inherits the handler), hit by both Ctrl-C's
        if pid == 0:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            except BaseException:  # noqa: BLE001 - any exit of the worker is the failure
                os._exit(1)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), signal.SIGINT)
        assert e.value.code == INTERRUPTED == 130
    finally:
        p.restore()


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(image_folder, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setenv("SDMP_FAULT", "nan@5")
    assert main(_args(image_folder, tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step" in err and "step_000000004.pt" in err  # the epoch-end checkpoint
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r")] == [ckpt.checkpoint_path("x", 4).name]
    assert torch.isfinite(torch.cat([v.float().flatten() for v in _params(tmp_path / "r").values()])).all()


def test_kill_9_inside_a_checkpoint_write_leaves_the_previous_one_and_resume_uses_it(image_folder, tmp_path):
    out = tmp_path / "r"
    env = {**os.environ, "SDMP_FAULT": "kill_in_checkpoint@6", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "sdmp_fast.pretrain", *_args(image_folder, out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in ckpt.list_checkpoints(out)] == [ckpt.checkpoint_path("x", 4).name]
    assert list((out / "checkpoints").glob(".step_000000006.pt.tmp-*"))  # the half-written file of the crash
    assert ckpt.latest_checkpoint(out).name == ckpt.checkpoint_path("x", 4).name
    summary = run(_args(image_folder, out, "--resume", "auto"), progress=False)
    assert summary["steps"] == 6 and "export" in summary
    assert not list((out / "checkpoints").glob(".step_*.tmp-*"))  # swept by the next write


def _two_rank_run(rank, world, out, extra, fault=""):
    from sdmp_fast.pretrain import run as run_
    if fault:
        os.environ["SDMP_FAULT"] = fault
    s = run_(["--loader", "synthetic", "--out", out, "run.knn=false", "run.log_every=100", "data.batch_size=8",
              "method.hidden_dim=64", "method.out_dim=32", "run.max_steps=6", *extra], progress=False)
    return s["steps"], s.get("preempted")


def test_two_ranks_agree_on_the_stop_step_and_resume_exactly(tmp_path):
    """Only rank 1 is signalled: both ranks stop at the same step (mid-epoch) with one checkpoint; resuming gives
    the parameters of an uninterrupted 2-rank run."""
    from sdmp_fast.engine.preempt import AGREE_LAG
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    stop = 2 + AGREE_LAG  # the all-reduce started after step 2 is read AGREE_LAG steps later
    assert launch(_two_rank_run, world=2, args=(part, [], "sigusr1@2#1"), timeout=180) == [
        (stop, "a signal on another rank"), (stop, "SIGUSR1")]
    assert [p.name for p in ckpt.list_checkpoints(Path(part))] == [ckpt.checkpoint_path("x", stop).name]
    assert launch(_two_rank_run, world=2, args=(part, ["--resume", "auto"]), timeout=180) == [(6, None)] * 2
    assert launch(_two_rank_run, world=2, args=(full, []), timeout=180) == [(6, None)] * 2
    a, b = _params(Path(full)), _params(Path(part))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


# ----------------------------------------------------------------------------- bad input

def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run(["--config", SMOKE, "--data", str(image_folder), "--out", str(out)], progress=False)
    return out


def _bad_folder(image_folder, tmp_path, kind):
    import shutil
    root = tmp_path / kind
    shutil.copytree(image_folder, root)
    if kind == "corrupt_jpeg":
        victim = sorted((root / "train").rglob("*.jpg"))[5]
        victim.write_bytes(victim.read_bytes()[:200])
        return ["--data", str(root)], str(victim)
    (root / "train" / "class_zzz").mkdir()
    return ["--data", str(root)], "class folder(s) without images"


@pytest.mark.parametrize("case", ["corrupt_jpeg", "empty_class", "truncated_beton", "config_typo", "missing_path"])
def test_bad_input_fails_clearly_and_touches_no_existing_output(finished_run, image_folder, betons, tmp_path, case,
                                                               capsys):
    if case in ("corrupt_jpeg", "empty_class"):
        argv, message = _bad_folder(image_folder, tmp_path, case)
    elif case == "truncated_beton":
        bad = tmp_path / "t.beton"
        bad.write_bytes(betons["jpg"][0].read_bytes()[:5000])
        argv, message = ["--loader", "ffcv", f"data.beton={bad}"], "truncated or damaged .beton"
    elif case == "config_typo":
        argv, message = ["--data", str(image_folder), "optim.lrr=1"], "unknown key 'optim.lrr'"
    else:
        argv, message = ["--data", str(tmp_path / "nowhere")], "does not exist"
    before = _snapshot(finished_run)
    resume = ["--config", SMOKE, *argv, "--out", str(finished_run), "--resume", "auto"]
    if case == "truncated_beton":  # another loader is a config change, refused first ...
        assert main(resume) == 2
        assert "this start changes data.loader 'torch' -> 'ffcv'" in capsys.readouterr().err
    assert main([*resume, "--allow-config-change"]) == 2  # ... and when allowed, the data's own error shows
    assert message in capsys.readouterr().err
    assert _snapshot(finished_run) == before


def test_fuzzed_structural_damage_always_gives_a_clear_error(betons, image_folder, tmp_path):
    """Truncated and byte-flipped .beton files and JPEGs, mutated config values: each loads or fails with a
    DataError / ConfigError naming the file or the key, never another exception."""
    import numpy as np

    from loaders.beton import Beton
    from sdmp_fast.config import ConfigError, load_config, to_dict
    from sdmp_fast.data.folders import DataError, scan_folder, verify_images
    rng = np.random.default_rng(0)
    good = betons["jpg"][0].read_bytes()
    header_end = 24 + 5 * 1041  # header and the five field descriptors
    for trial in range(60):
        b = bytearray(good)
        if trial % 3 == 0:
            b = b[:int(rng.integers(1, len(b)))]
        else:
            lo, hi = (0, header_end) if trial % 3 == 1 else (len(b) - 36 * 24, len(b))  # header / allocation table
            for pos in rng.integers(lo, hi, size=int(rng.integers(1, 6))):
                b[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / f"fuzz{trial}.beton"
        path.write_bytes(bytes(b))
        try:
            r = Beton(path)
            for i in range(len(r)):
                r.image(i)
            r.close()
        except DataError as e:
            assert str(path) in str(e), e
    jpegs = tmp_path / "jpegs"
    import shutil
    shutil.copytree(image_folder / "train", jpegs)
    damaged = []
    for k, p in enumerate(sorted(jpegs.rglob("*.jpg"))[:12]):
        b = bytearray(p.read_bytes())
        if k % 2:
            b = b[:int(rng.integers(2, len(b) // 2))]  # truncated
        else:
            b[2:40] = bytes(38)  # damaged markers after SOI
        p.write_bytes(bytes(b))
        damaged.append(str(p))
    with pytest.raises(DataError) as err:
        verify_images(scan_folder(jpegs)[0], str(tmp_path / "cache"), progress=False)
    assert all(p in str(err.value) for p in damaged)
    defaults = to_dict(load_config())
    keys = [f"{s}.{k}" for s, sec in defaults.items() for k in sec]
    for trial in range(150):
        key = keys[int(rng.integers(len(keys)))]
        if trial % 4 == 0:  # a typo in the key
            i = int(rng.integers(len(key)))
            key = key[:i] + key[i + 1:]
        value = ["abc", "-1", "0", "[1, 2]", "1e9", "", "true", "[]", "{a: 1}", "nan"][int(rng.integers(10))]
        try:
            load_config(None, [f"{key}={value}"])
        except ConfigError as e:
            assert key.split(".")[-1] in str(e) or key in str(e), (key, value, e)


"""Multi-process conv training with jax.distributed (gloo on CPU, loopback only).

Fast tier: the placement options (checked, read from the environment, not part of the config or
its hashes), the CLI's options built from TrainConfig, the global-mesh helpers in one process.
Slow tier: two local CPU processes train the small DCGAN (width 1/32, 8x8 digits) to the
parameters, losses, singular values and samples of one process with the same global batch; a
two-process run killed with SIGKILL after a checkpoint resumes (again on two processes) to the
numbers of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("orbax.checkpoint")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from overparam import records  # noqa: E402
from overparam.bridge import distributed, sharding  # noqa: E402
from overparam.bridge import train as train_cli  # noqa: E402
from overparam.bridge.checkpoints import Checkpoints  # noqa: E402
from overparam.bridge.config import TrainConfig, core_config  # noqa: E402
from overparam.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROOT = Path(__file__).resolve().parents[1]
CONF = dict(arch="stoch_dcgan", width=1 / 32, latent_dim=8, batch_size=8, steps=4, steps_per_call=2, log_every=1,
            ckpt_every=2)
CLI_CONF = ["--data", "digits", "--n", "64", "--arch", "stoch_dcgan", "--width", "1/32", "--latent-dim", "8",
            "--batch-size", "8", "--steps-per-call", "2", "--log-every", "1", "--ckpt-every", "2", "--quiet"]
RTOL, ATOL = 1e-4, 1e-5  # summation order differs between 1 and 2 devices; measured differences are ~3e-7


# -- placement options ---------------------------------------------------------------------------------
def test_options_explicit_env_and_single():
    o = distributed.options("10.0.0.1:1234", 2, 1, env={})
    assert (o.coordinator, o.num_processes, o.process_id, o.auto, o.single) == ("10.0.0.1:1234", 2, 1, False, False)
    assert distributed.options(env={}) is None  # nothing given: one process, nothing initialized
    env = {"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    o = distributed.options("h:9", env=env)
    assert (o.num_processes, o.process_id) == (4, 3)
    o = distributed.options(env={"JAX_COORDINATOR_ADDRESS": "h:9"})  # jax reads the address itself
    assert o.auto and o.coordinator is None
    assert distributed.options(auto=True, env={}).auto
    assert distributed.options("h:9", 1, 0, env={}).single
    assert distributed.initialize(distributed.options("h:9", 1, 0, env={})) is False  # 1 process: no service
    assert distributed.initialize(None) is False and not jax.distributed.is_initialized()
    assert distributed.options("h:9", 2, 0, local_device_ids="0,1", env={}).local_device_ids == (0, 1)


@pytest.mark.parametrize("kw,env,match", [
    (dict(coordinator="10.0.0.1"), {}, "HOST:PORT"),
    (dict(coordinator="h:99999", num_processes=2, process_id=0), {}, "HOST:PORT"),
    (dict(coordinator="h:1"), {}, "--num-processes N and --process-id"),
    (dict(num_processes=2, process_id=0), {}, "need --coordinator"),
    (dict(), {"JAX_PROCESS_ID": "1"}, "need --coordinator"),
    (dict(coordinator="h:1", num_processes=2, process_id=2), {}, r"0\.\.1"),
    (dict(coordinator="h:1", num_processes=0, process_id=0), {}, ">= 1"),
    (dict(coordinator="h:1", num_processes=2, process_id=0, local_device_ids="0,a"), {}, "comma-separated"),
    (dict(coordinator="h:1", num_processes=2, process_id=0, timeout=0), {}, "timeout"),
    (dict(coordinator="h:1"), {"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES"),
])
def test_bad_options(kw, env, match):
    with pytest.raises(ConfigError, match=match):
        distributed.options(**kw, env=env)


def test_initialize_after_a_computation_is_one_error():
    jnp.zeros(2).block_until_ready()  # backends now exist in this process
    with pytest.raises(ConfigError, match="before any JAX computation"):
        distributed.initialize(distributed.options("127.0.0.1:9", 2, 0, timeout=1, env={}))
    assert not jax.distributed.is_initialized()


# -- the CLI -------------------------------------------------------------------------------------------
def test_cli_options_are_the_config_fields_and_placement_enters_no_hash():
    p = train_cli.build_parser()
    flags = {a.dest for a in p._actions}
    assert {f for f in TrainConfig.__dataclass_fields__} <= flags
    base = ["--width", "1/32", "--latent-dim", "none", "--no-ema", "--steps", "6", "--log-every", "2",
            "--steps-per-call", "2", "--ckpt-every", "2", "--out-dir", "runs/x"]
    placed = base + ["--coordinator", "10.0.0.1:1234", "--num-processes", "8", "--process-id", "5",
                     "--local-device-ids", "0,1", "--init-timeout", "60"]
    a, b = (train_cli.config_from_args(p.parse_args(v)) for v in (base, placed))
    assert a == b == TrainConfig(width=0.03125, latent_dim=None, ema=False, steps=6, log_every=2, steps_per_call=2,
                                 ckpt_every=2, out_dir="runs/x")
    assert records.content_hash(a) == records.content_hash(b)
    assert records.config_hash(core_config(a)) == records.config_hash(core_config(b))
    defaults = train_cli.config_from_args(p.parse_args([]))
    assert defaults == TrainConfig()  # every default is TrainConfig's own


def test_cli_bad_input_is_one_error_line(capsys):
    assert train_cli.main(["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --coordinator must be HOST:PORT") and err.count("\n") == 1
    assert train_cli.main(["--steps", "7", "--log-every", "2", "--steps-per-call", "2", "--ckpt-every", "2"]) == 2
    assert "multiple of log_every" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cli.main(["--width", "wide"])
    assert "expected a number" in capsys.readouterr().err


# -- the global-mesh helpers in one process -------------------------------------------------------------
def test_single_process_mesh_helpers():
    mesh = sharding.data_mesh(0)
    assert list(mesh.devices.flat) == list(sharding.local_mesh(0).devices.flat)
    assert list(sharding.global_mesh(0).devices.flat) == jax.devices()
    with pytest.raises(ConfigError, match="devices=0"):
        sharding.global_mesh(len(jax.devices()) + 1)
    n = mesh.devices.size
    x = np.arange(8 * n * 3, dtype=np.float32).reshape(8 * n, 3)
    assert sharding.local_rows(mesh, 8 * n) == slice(0, 8 * n)
    for arr in (sharding.from_local_batch(x, mesh), sharding.shard_batch(x, mesh)):
        np.testing.assert_array_equal(np.asarray(arr), x)
        assert arr.sharding.is_equivalent_to(sharding.batch_sharding(mesh), 2)


# -- two processes ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JAX_COORDINATOR", "JAX_NUM_PROC",
                                                                       "JAX_PROCESS_ID", "SLURM_", "OMPI_"))}
    return {**env, "JAX_PLATFORMS": "cpu"}


def launch(argvs: list[list[str]], logs: Path) -> list[subprocess.Popen]:
    procs = []
    for i, argv in enumerate(argvs):
        out, err = open(logs / f"out{i}.txt", "w"), open(logs / f"err{i}.txt", "w")
        procs.append(subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, env=child_env(), cwd=ROOT))
    return procs


def finish(procs: list[subprocess.Popen], logs: Path, timeout: float) -> list[str]:
    """Wait for every child (killing them all on a timeout or a failure); their stdouts."""
    deadline = time.monotonic() + timeout
    try:
        for i, p in enumerate(procs):
            rc = p.wait(timeout=max(deadline - time.monotonic(), 1))
            assert rc == 0, f"process {i} exited {rc}: {(logs / f'err{i}.txt').read_text()[-3000:]}"
    finally:
        kill(procs)
    return [(logs / f"out{i}.txt").read_text() for i in range(len(procs))]


def kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=30)


def result(stdout: str) -> dict:
    return json.loads(stdout.split("RESULT", 1)[1])


def last_json(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


def assert_records_close(ref: list[dict], got: list[dict]) -> None:
    assert [r["step"] for r in ref] == [r["step"] for r in got]
    for r1, r2 in zip(ref, got, strict=True):
        assert set(r1) == set(r2)
        for k, v in r1.items():
            if isinstance(v, float):
                np.testing.assert_allclose(r2[k], v, rtol=RTOL, atol=ATOL, err_msg=f"step {r1['step']} {k}")
            else:
                assert r2[k] == v, k


def reference(steps: int):
    """One process, one device, the same global batch: the in-process Trainer."""
    from overparam.bridge.data import load_dataset
    from overparam.bridge.trainer import Trainer

    t = Trainer(TrainConfig(**{**CONF, "steps": steps}), load_dataset("digits", n=64))
    t.train(progress=False)
    return t


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from overparam.bridge import distributed
    coord, pid, conf = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    distributed.initialize(distributed.options(coord, 2, pid))  # before any JAX computation
    import jax, jax.numpy as jnp
    from overparam.bridge import sharding
    from overparam.bridge.data import load_dataset
    from overparam.bridge.trainer import Trainer, TrainConfig
    t = Trainer(TrainConfig(**conf), load_dataset("digits", n=64))
    s = t.train(progress=False)
    mesh = t.program.mesh
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    rows = sharding.local_rows(mesh, 8)
    a, b = sharding.from_local_batch(x[rows], mesh), sharding.shard_batch(x, mesh)
    sums = jax.jit(lambda a, b: (jnp.sum(a * a), jnp.sum(a * b), jnp.sum(jnp.arange(8.0)[:, None] * a)),
                   out_shardings=sharding.replicated(mesh))(a, b)
    leaf = jax.tree_util.tree_leaves(t.state.gen)[0]
    out = {"status": s["status"], "processes": jax.process_count(), "mesh": int(mesh.devices.size),
           "param_devices": len(leaf.sharding.device_set), "addressable": leaf.is_fully_addressable,
           "sums": [float(v) for v in sums], "rows": [rows.start, rows.stop], "sample": t.sample(4).ravel().tolist(),
           "records": t.records, "leaves": [np.asarray(v).ravel().tolist() for v in jax.tree_util.tree_leaves(
               (t.state.gen, t.state.disc, t.state.ema, t.state.gen_state, t.state.disc_state))]}
    print("RESULT" + json.dumps(out), flush=True)
""")


@pytest.mark.slow
def test_two_processes_train_to_the_numbers_of_one(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    conf = json.dumps(CONF)
    procs = launch([["-c", SCRIPT, addr, str(i), conf] for i in range(2)], tmp_path)
    outs = finish(procs, tmp_path, timeout=400)
    ref = reference(CONF["steps"])
    x = np.arange(24, dtype=np.float64).reshape(8, 3)
    want_leaves = [np.asarray(v).ravel() for v in jax.tree_util.tree_leaves(
        (ref.state.gen, ref.state.disc, ref.state.ema, ref.state.gen_state, ref.state.disc_state))]
    for i, out in enumerate(outs):
        r = result(out)
        assert r["status"] == "completed" and r["processes"] == 2 and r["mesh"] == 2
        assert r["param_devices"] == 2 and not r["addressable"]  # replicated over both processes' devices
        assert r["rows"] == [4 * i, 4 * i + 4]  # each process holds its half of the global batch
        # the global arrays built from local slices / from the global batch hold the whole batch
        np.testing.assert_allclose(r["sums"], [(x * x).sum(), (x * x).sum(), (np.arange(8.0)[:, None] * x).sum()],
                                   rtol=1e-6)
        for got, want in zip(r["leaves"], want_leaves, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(np.asarray(r["sample"]), ref.sample(4).ravel(), rtol=RTOL, atol=ATOL)
        assert_records_close(ref.records, r["records"])
    assert result(outs[0])["leaves"] == result(outs[1])["leaves"]  # both processes hold the same bits


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last"

    def cli(steps: int, port: int) -> list[list[str]]:
        return [["-m", "overparam.bridge.train", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", str(i), "--out-dir", str(run), "--steps", str(steps), *CLI_CONF] for i in range(2)]

    (tmp_path / "a").mkdir()
    procs = launch(cli(1000, free_port()), tmp_path / "a")  # far longer than the test waits
    try:
        deadline = time.monotonic() + 400
        while not (last.is_dir() and any(p.name.isdigit() for p in last.iterdir())):
            assert all(p.poll() is None for p in procs), (tmp_path / "a" / "err0.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 400 s"
            time.sleep(0.02)
    finally:
        kill(procs)  # SIGKILL both, right after the first checkpoint appeared
    killed_at = max(int(p.name) for p in last.iterdir() if p.name.isdigit())
    assert killed_at >= 2 and killed_at % 2 == 0
    final = killed_at + 2
    (tmp_path / "b").mkdir()
    outs = finish(launch(cli(final, free_port()), tmp_path / "b"), tmp_path / "b", timeout=400)
    summary = last_json(outs[0])
    assert summary["status"] == "completed" and summary["step"] == final and summary["resumed_from"] == killed_at
    assert len(summary["devices"]) == 2
    assert not [ln for ln in outs[1].splitlines() if ln.startswith("{")]  # process 1 prints no summary
    ref = reference(final)
    log = [records.from_jsonable(json.loads(ln)) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert_records_close(ref.records, log)
    state, meta = Checkpoints(run / "checkpoints").restore("last", ref.state)
    assert meta["step"] == final and meta["config_hash"] == records.config_hash(ref.core)
    for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(ref.state), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)
    assert sorted(p.name for p in last.iterdir() if p.name.isdigit()) == [str(final)]


@pytest.mark.slow
def test_processes_started_with_different_options_stop_with_one_error(tmp_path):
    port = free_port()
    argvs = [["-m", "overparam.bridge.train", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
              "--process-id", str(i), "--out-dir", str(tmp_path / "run"), "--steps", str(4 + 2 * i), *CLI_CONF]
             for i in range(2)]
    procs = launch(argvs, tmp_path)
    try:
        rcs = [p.wait(timeout=300) for p in procs]
    finally:
        kill(procs)
    assert rcs == [2, 2]
    for i in range(2):
        err = (tmp_path / f"err{i}.txt").read_text()
        assert "error: the 2 processes of this run differ in: options;" in err, err[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any work

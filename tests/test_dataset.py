"""Episode dataset format: round trip, manifest, resume, crash safety and corruption reports."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from world_env_training.data.dataset import (FORMAT, VERSION, Dataset, DatasetError, DatasetWriter,
                                             Episode)

T, H, W = 5, 16, 16


def make_episode(n: int = 0, T: int = T, success_at: int | None = 3, with_wrist: bool = True,
                 with_depth: bool = True, **overrides) -> Episode:
    """Episode number ``n`` (deterministic in n); ``overrides`` replace Episode fields."""
    rng = np.random.default_rng(n)
    success = np.zeros(T + 1, np.uint8)
    if success_at is not None:
        success[success_at:] = 1
    fields = dict(
        frames=rng.integers(0, 256, (T + 1, H, W, 3), dtype=np.uint8),
        actions=rng.normal(size=(T, 7)).astype(np.float32),
        states=rng.normal(size=(T + 1, 7)).astype(np.float32),
        joint_positions=rng.normal(size=(T + 1, 7)).astype(np.float32),
        success=success,
        instruction="pick up the ketchup and place it in the basket",
        suite="libero_object", task_id=n % 3, init_state_id=n, source="expert", seed=n,
        camera={"name": "agentview", "width": W, "height": H, "fx": 20.0, "fy": 20.0, "cx": 7.5,
                "cy": 7.5, "T_world_camera": np.eye(4).tolist()},
        wrist_frames=rng.integers(0, 256, (T + 1, 8, 12, 3), dtype=np.uint8) if with_wrist else None,
        depth=rng.uniform(0.5, 2.0, (T + 1, H, W)).astype(np.float32) if with_depth else None,
        extras={"log_probs": rng.normal(size=T).astype(np.float32),
                "value": rng.normal(size=(T + 1, 2))},
    )
    fields.update(overrides)
    return Episode(**fields)


def assert_same(a: Episode, b: Episode) -> None:
    for name in ("frames", "actions", "states", "joint_positions", "success", "wrist_frames", "depth"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
        else:
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    for name in ("instruction", "suite", "task_id", "init_state_id", "camera", "source", "seed"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.extras.keys() == b.extras.keys()
    for k in a.extras:
        assert a.extras[k].dtype == b.extras[k].dtype and np.array_equal(a.extras[k], b.extras[k]), k


def write(path, episodes, **kw):
    with DatasetWriter(path, **kw) as w:
        return [w.append(e) for e in episodes]


# --- Episode ------------------------------------------------------------------------------

def test_episode_properties():
    e = make_episode(success_at=3)
    assert (e.length, e.succeeded, e.success_step) == (T, True, 3)
    f = make_episode(success_at=None)
    assert (f.succeeded, f.success_step) == (False, None)
    assert make_episode(success_at=0).success_step == 0


def test_episode_casts_float64_and_bool_labels():
    e = make_episode(actions=np.zeros((T, 7)), success=np.array([0, 0, 1, 1, 1, 1], bool))
    assert e.actions.dtype == np.float32 and e.success.dtype == np.uint8 and e.success_step == 2


@pytest.mark.parametrize("override, field_name, fragment", [
    (dict(success=np.array([0, 1, 1, 0, 1, 1], np.uint8)), "success", "not monotone"),
    (dict(success=np.array([0, 0, 2, 2, 2, 2], np.uint8)), "success", "0 and 1"),
    (dict(success=np.zeros(T, np.uint8)), "success", f"({T},)"),
    (dict(actions=np.zeros((T, 6), np.float32)), "actions", f"({T}, 7)"),
    (dict(actions=np.zeros((T + 1, 7), np.float32)), "actions", f"({T}, 7)"),
    (dict(states=np.zeros((T, 7), np.float32)), "states", f"({T + 1}, 7)"),
    (dict(joint_positions=np.zeros((T + 1, 6), np.float32)), "joint_positions", f"({T + 1}, 7)"),
    (dict(frames=np.zeros((T + 1, H, W), np.uint8)), "frames", "(T+1, H, W, 3)"),
    (dict(frames=np.zeros((T + 1, H, W, 3), np.float32)), "frames", "uint8"),
    (dict(depth=np.ones((T + 1, H, W + 1), np.float32)), "depth", f"({T + 1}, {H}, {W})"),
    (dict(depth=-np.ones((T + 1, H, W), np.float32)), "depth", "negative"),
    (dict(wrist_frames=np.zeros((T, H, W, 3), np.uint8)), "wrist_frames", f"({T + 1}, Hw, Ww, 3)"),
    (dict(actions=np.full((T, 7), np.nan, np.float32)), "actions", "non-finite"),
    (dict(states=np.full((T + 1, 7), np.inf, np.float32)), "states", "non-finite"),
    (dict(actions=np.zeros((T, 7), np.int64)), "actions", "floating"),
    (dict(instruction=""), "instruction", "non-empty"),
    (dict(task_id=-1), "task_id", ">= 0"),
    (dict(seed=1.5), "seed", "integer"),
    (dict(camera={"width": W + 1, "height": H}), "camera", f"{H}x{W}"),
    (dict(camera={"x": np.zeros(2)}), "camera", "JSON"),
    (dict(extras={"lp": np.zeros(T + 2)}), "extras['lp']", f"({T}, ...) or ({T + 1}, ...)"),
    (dict(extras={"bad name": np.zeros(T)}), "extras['bad name']", "identifier"),
])
def test_invalid_episode_names_field(override, field_name, fragment):
    with pytest.raises(ValueError) as err:
        make_episode(**override)
    msg = str(err.value)
    assert msg.startswith(field_name + ":") and fragment in msg, msg


# --- round trip and manifest --------------------------------------------------------------

def test_round_trip_every_field(tmp_path):
    episodes = [make_episode(0), make_episode(1, success_at=None, with_wrist=False, with_depth=False, extras={}),
                make_episode(2, T=1, success_at=0)]
    assert write(tmp_path / "ds", episodes, info={"cmd": "world-env collect_demos"}) == [0, 1, 2]
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 3
    for a, b in zip(episodes, ds):
        assert_same(a, b)
    assert_same(episodes[1], ds[-2])
    with pytest.raises(IndexError):
        ds[3]


def test_manifest_contents(tmp_path):
    e0, e1 = make_episode(0), make_episode(1, success_at=None, source="exploration")
    write(tmp_path / "ds", [e0, e1], info={"cmd": "x", "resolution": 16}, compress=False)
    files = sorted(p.name for p in (tmp_path / "ds" / "episodes").iterdir())
    assert files == ["episode_000000.npz", "episode_000001.npz"]
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert (m["format"], m["version"], m["info"]) == (FORMAT, VERSION, {"cmd": "x", "resolution": 16})
    assert m["created"] and m["updated"]
    a, b = m["episodes"]
    assert a["file"] == "episodes/episode_000000.npz" and b["index"] == 1
    assert (a["length"], a["succeeded"], a["success_step"], a["frame_shape"]) == (T, True, 3, [H, W, 3])
    assert (b["succeeded"], b["success_step"], b["source"]) == (False, None, "exploration")
    assert (a["suite"], a["task_id"], a["init_state_id"], a["seed"]) == ("libero_object", 0, 0, 0)
    assert a["instruction"] == e0.instruction and a["key"] == e0.default_key()
    assert a["bytes"] == (tmp_path / "ds" / a["file"]).stat().st_size and len(a["sha256"]) == 64
    assert "extras.log_probs" in a["arrays"] and "depth" in a["arrays"]
    ds = Dataset(tmp_path / "ds")
    assert ds.select(source="exploration") == [1] and ds.select(succeeded=True) == [0]
    assert ds.select(suite="libero_object", task_id=1) == [1] and ds.select(suite="libero_goal") == []


def test_load_arrays(tmp_path):
    e = make_episode(0)
    write(tmp_path / "ds", [e])
    got = Dataset(tmp_path / "ds").load_arrays(0, ("frames", "actions", "extras.log_probs"))
    assert set(got) == {"frames", "actions", "extras.log_probs"}
    assert np.array_equal(got["frames"], e.frames) and np.array_equal(got["extras.log_probs"], e.extras["log_probs"])
    with pytest.raises(DatasetError, match="episode_000000.npz: no array"):
        Dataset(tmp_path / "ds").load_arrays(0, ("nope",))


# --- resume -------------------------------------------------------------------------------

def test_resume_continues_numbering_and_has(tmp_path):
    path = tmp_path / "ds"
    write(path, [make_episode(0), make_episode(1)], info={"cfg": 1})
    with DatasetWriter(path, info={"cfg": 1}) as w:
        assert len(w) == 2 and w.has(make_episode(1).default_key()) and not w.has(make_episode(2).default_key())
        assert w.append(make_episode(2)) == 2
        assert w.append(make_episode(3), key="custom") == 3 and w.has("custom")
        with pytest.raises(ValueError, match="key"):
            w.append(make_episode(0))  # same default key as episode 0
    ds = Dataset(path)
    assert len(ds) == 4 and ds.keys()[3] == "custom" and ds.info == {"cfg": 1}
    assert_same(ds[2], make_episode(2))
    with pytest.raises(ValueError, match="info"):
        DatasetWriter(path, info={"cfg": 2})
    with pytest.raises(FileExistsError):
        DatasetWriter(path, resume=False)


def test_second_writer_refused(tmp_path):
    with DatasetWriter(tmp_path / "ds"):
        with pytest.raises(DatasetError, match="another DatasetWriter"):
            DatasetWriter(tmp_path / "ds")
    DatasetWriter(tmp_path / "ds").close()  # released on close


# --- crash safety -------------------------------------------------------------------------

def test_stray_temp_and_unlisted_file_ignored_then_cleaned(tmp_path):
    """What a kill leaves: a half-written temp file, or a complete episode file whose manifest
    update never happened. Readers ignore both; a resumed writer cleans and overwrites them."""
    path = tmp_path / "ds"
    write(path, [make_episode(0)])
    (path / "episodes" / ".episode_000001.npz.tmp-999").write_bytes(b"PK\x03\x04half")
    (path / ".manifest.json.tmp-999").write_text('{"trunc')
    (path / "episodes" / "episode_000001.npz").write_bytes(b"complete but never listed")
    ds = Dataset(path)
    assert len(ds) == 1 and ds.verify()["unreferenced"] == [
        "episodes/.episode_000001.npz.tmp-999", "episodes/episode_000001.npz"]
    with DatasetWriter(path) as w:
        assert not list(path.glob("**/.*.tmp-*"))
        assert w.append(make_episode(1)) == 1
    assert_same(Dataset(path)[1], make_episode(1))


def test_failed_manifest_update_keeps_previous_dataset(tmp_path, monkeypatch):
    path = tmp_path / "ds"
    w = DatasetWriter(path)
    w.append(make_episode(0))
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError):
        w.append(make_episode(1))
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(w) == 1 and not w.has(make_episode(1).default_key())
    assert len(Dataset(path)) == 1 and not list(path.glob(".*.tmp-*"))
    assert w.append(make_episode(1)) == 1  # the writer stays usable
    w.close()
    assert len(Dataset(path)) == 2


def test_sigkill_during_write_loop_leaves_readable_dataset(tmp_path):
    """SIGKILL a writer process at a random moment (in about half the runs inside a file write),
    three times over, resuming each time: every returned append survives, nothing else breaks."""
    path = tmp_path / "ds"
    child = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from test_dataset import make_episode
        from world_env_training.data.dataset import DatasetWriter
        w = DatasetWriter({str(path)!r})
        for i in range(len(w), 100000):
            w.append(make_episode(i, T=60))  # 60 steps: writes long enough to be hit
            print(i, flush=True)
    """)
    rng = np.random.default_rng()
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(3):
                line = proc.stdout.readline()
                assert line, "writer exited early"
                done = int(line)
            time.sleep(rng.uniform(0, 0.05))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ds = Dataset(path)
        assert len(ds) >= done + 1  # every append that returned is there
        ds.verify(load=True)
        for i in range(len(ds)):
            assert_same(ds[i], make_episode(i, T=60))
    with DatasetWriter(path) as w:
        assert w.append(make_episode(len(ds), T=60)) == len(ds)


# --- corruption is reported, naming the file ----------------------------------------------

@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "ds"
    write(path, [make_episode(i) for i in range(3)])
    return path


def test_truncated_file(dataset):
    f = dataset / "episodes" / "episode_000001.npz"
    f.write_bytes(f.read_bytes()[:100])
    ds = Dataset(dataset)
    assert_same(ds[0], make_episode(0))
    with pytest.raises(DatasetError, match=r"episode_000001\.npz: 100 bytes.*truncated"):
        ds[1]


def test_flipped_byte_sha256_mismatch(dataset):
    f = dataset / "episodes" / "episode_000002.npz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"episode_000002\.npz: sha256 mismatch"):
        Dataset(dataset)[2]
    with pytest.raises(DatasetError, match=r"1 of 3 episode files bad:\n.*episode_000002\.npz"):
        Dataset(dataset).verify()


def test_corrupt_file_without_sha_check_fails_to_load(dataset):
    f = dataset / "episodes" / "episode_000000.npz"
    f.write_bytes(b"\0" * f.stat().st_size)  # same size, garbage
    with pytest.raises(DatasetError, match=r"episode_000000\.npz: cannot be loaded"):
        Dataset(dataset, check_sha256=False)[0]


def test_missing_file_and_verify_lists_all(dataset):
    (dataset / "episodes" / "episode_000001.npz").unlink()
    f = dataset / "episodes" / "episode_000002.npz"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(DatasetError, match=r"episode_000001\.npz: missing"):
        Dataset(dataset)[1]
    report = Dataset(dataset).verify(raise_on_error=False)
    assert sorted(report["bad"]) == ["episodes/episode_000001.npz", "episodes/episode_000002.npz"]
    assert "missing" in report["bad"]["episodes/episode_000001.npz"]
    with pytest.raises(DatasetError) as err:
        Dataset(dataset).verify()
    assert "episode_000001.npz" in str(err.value) and "episode_000002.npz" in str(err.value)


def test_valid_file_with_invalid_arrays(dataset):
    """A file whose sha256 matches its manifest entry but whose arrays break the format."""
    import hashlib
    import io
    buf = io.BytesIO()
    arrays = make_episode(0)._arrays()
    arrays["actions"] = arrays["actions"][:, :6]
    np.savez(buf, **arrays)
    data = buf.getvalue()
    (dataset / "episodes" / "episode_000000.npz").write_bytes(data)
    m = json.loads((dataset / "manifest.json").read_text())
    m["episodes"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (dataset / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match=r"episode_000000\.npz: invalid episode \(actions: shape \(5, 6\)"):
        Dataset(dataset)[0]
    with pytest.raises(DatasetError, match="episode_000000.npz"):
        Dataset(dataset).verify(load=True)
    assert Dataset(dataset).verify()["bad"] == {}  # sha-only verify can't see it


@pytest.mark.parametrize("content, fragment", [
    (None, "missing"),
    ('{"format": "world-env-episodes", "vers', "not valid JSON"),
    ('[1, 2]', "format"),
    ('{"format": "other", "version": 1}', "format 'other'"),
    ('{"format": "world-env-episodes", "version": 99, "info": {}, "episodes": []}', "unknown format version 99"),
    ('{"format": "world-env-episodes", "version": 1, "info": {}, "episodes": '
     '[{"index": 0, "file": "../../etc/passwd"}]}', "episode entry 0 malformed"),
])
def test_bad_manifest(dataset, content, fragment):
    manifest = dataset / "manifest.json"
    if content is None:
        manifest.unlink()
    else:
        manifest.write_text(content)
    with pytest.raises(DatasetError) as err:
        Dataset(dataset)
    assert "manifest.json" in str(err.value) and fragment in str(err.value), str(err.value)
    with pytest.raises((DatasetError, FileExistsError)):
        DatasetWriter(dataset)  # a writer won't resume (or overwrite) a broken dataset either

"""The stage runner: streaming, drops, skip-if-finished, resume after kill -9, sharding.

Rows are plain dicts with a tiny JSONL reader/encoder so that these tests exercise the runner
itself; tests/web/test_ingest.py covers it with real ManifestRecords.
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

import pytest

from omnisource.errors import DataError
from omnisource.web.stage import Outcome, run_stage

REPO = Path(__file__).resolve().parents[2]

# one module-level script shared by the subprocess tests: it defines the reader/encoder and a
# deterministic process_fn (drops multiples of 7, doubles multiples of 5, optional sleep)
SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    from omnisource.web.stage import Outcome, run_stage

    def reader(path):
        with open(path) as fh:
            for line in fh:
                yield json.loads(line)

    def encode(rec):
        return json.dumps(rec, sort_keys=True)

    SLEEP = float(os.environ.get("STAGE_SLEEP", "0"))

    def process(chunk):
        time.sleep(SLEEP)
        out = []
        for r in chunk:
            i = r["i"]
            if i % 7 == 0:
                out.append(Outcome(None, "seven", {"score": i / 100}))
            elif i % 5 == 0:
                out.append(Outcome([dict(r, part=0), dict(r, part=1)]))
            else:
                out.append((dict(r, ok=True), None))
        return out

    def main(inp, outdir, chunk):
        if os.environ.get("STAGE_DIST") == "1":
            import torch.distributed as dist
            dist.init_process_group("gloo")
        res = run_stage("toy", inp, outdir, process, {"k": 1}, chunk_size=int(chunk),
                        reader=reader, encode=encode, progress=False)
        print(json.dumps(res.meta["counts"]))

    if __name__ == "__main__":
        main(*sys.argv[1:])
''')


def _write_input(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"i": i, "path": f"v{i}.mp4", "source": "web" if i % 2 else "img",
                                 "query_label": i % 3}) + "\n")
    return path


@pytest.fixture()
def toy(tmp_path):
    script = tmp_path / "toy_stage.py"
    script.write_text(SCRIPT)
    sys.path.insert(0, str(tmp_path))
    import importlib

    mod = importlib.import_module("toy_stage")
    mod = importlib.reload(mod)
    yield mod, script
    sys.path.remove(str(tmp_path))


def _run(mod, inp, out, chunk=4, **kw):
    return run_stage("toy", inp, out, mod.process, {"k": 1}, chunk_size=chunk, reader=mod.reader,
                     encode=mod.encode, progress=False, **kw)


def _files(out: Path) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in ("manifest.jsonl", "dropped.jsonl", "side.jsonl")}


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(extra)
    return env


def test_outputs_counts_and_order(toy, tmp_path):
    mod, _ = toy
    inp = _write_input(tmp_path / "in.jsonl", 30)
    res = _run(mod, inp, tmp_path / "out", chunk=4)
    rows = [json.loads(x) for x in res.manifest.read_text().splitlines()]
    expect = []
    for i in range(30):
        if i % 7 == 0:
            continue
        expect += [(i, 0), (i, 1)] if i % 5 == 0 else [(i, None)]
    assert [(r["i"], r.get("part")) for r in rows] == expect
    dropped = [json.loads(x) for x in res.dropped.read_text().splitlines()]
    assert [d["index"] for d in dropped] == [0, 7, 14, 21, 28]
    assert all(d["reason"] == "seven" and d["extra"]["score"] == d["index"] / 100 for d in dropped)
    c = res.meta["counts"]
    assert c["in"]["total"] == 30 and c["out"]["total"] == len(expect)
    assert c["dropped"]["by_reason"] == {"seven": 5}
    assert sum(c["in"]["by_source"].values()) == 30 and set(c["in"]["by_source"]) == {"img", "web"}
    assert sum(c["in"]["by_class"].values()) == 30
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["stage"] == "toy" and len(meta["config_hash"]) == 40 and len(meta["input_hash"]) == 40
    assert not (tmp_path / "out" / ".work").exists()


def test_finished_stage_is_skipped_and_config_change_reruns(toy, tmp_path):
    mod, _ = toy
    inp = _write_input(tmp_path / "in.jsonl", 10)
    _run(mod, inp, tmp_path / "out")
    calls = []

    def counting(chunk):
        calls.append(len(chunk))
        return mod.process(chunk)

    res = run_stage("toy", inp, tmp_path / "out", counting, {"k": 1}, reader=mod.reader,
                    encode=mod.encode, progress=False)
    assert res.skipped and calls == []
    res = run_stage("toy", inp, tmp_path / "out", counting, {"k": 2}, reader=mod.reader,
                    encode=mod.encode, progress=False)
    assert not res.skipped and sum(calls) == 10
    # changing the input also reruns
    _write_input(inp, 11)
    res = run_stage("toy", inp, tmp_path / "out", counting, {"k": 2}, reader=mod.reader,
                    encode=mod.encode, progress=False)
    assert not res.skipped and res.meta["counts"]["in"]["total"] == 11


def test_errors_become_counted_drops_or_raise_when_strict(toy, tmp_path):
    mod, _ = toy
    inp = _write_input(tmp_path / "in.jsonl", 9)

    def flaky(chunk):
        if any(r["i"] == 4 for r in chunk):
            raise DataError("v4.mp4", "moov atom not found")
        return [Outcome(r) for r in chunk]

    res = run_stage("toy", inp, tmp_path / "out", flaky, {}, chunk_size=3, reader=mod.reader,
                    encode=mod.encode, progress=False)
    kept = [json.loads(x)["i"] for x in res.manifest.read_text().splitlines()]
    assert kept == [0, 1, 2, 3, 5, 6, 7, 8]
    assert res.meta["counts"]["dropped"]["by_reason"] == {"error: DataError": 1}
    with pytest.raises(DataError):
        run_stage("toy", inp, tmp_path / "strict", flaky, {}, chunk_size=3, reader=mod.reader,
                  encode=mod.encode, progress=False, strict=True)

    def buggy(chunk):
        raise ZeroDivisionError("a bug, not bad data")

    with pytest.raises(ZeroDivisionError):
        run_stage("toy", inp, tmp_path / "bug", buggy, {}, reader=mod.reader, encode=mod.encode, progress=False)


def test_resume_after_kill9_is_byte_identical(toy, tmp_path):
    mod, script = toy
    inp = _write_input(tmp_path / "in.jsonl", 60)
    ref = tmp_path / "ref"
    _run(mod, inp, ref, chunk=3)

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(inp), str(out), "3"],
                            env=_env(STAGE_SLEEP="0.05"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / ".work" / "world1" / "rank0" / "checkpoint.json"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        if ckpt.exists():
            try:
                pos = json.loads(ckpt.read_text())["position"]
            except ValueError:
                pos = 0
            if pos >= 12:
                break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "meta.json").exists(), "stage finished before it could be killed"
    done = json.loads(ckpt.read_text())["position"]
    assert 0 < done < 60
    # simulate a torn write after the last checkpoint: garbage at the journal tails
    for part in ("kept.part", "dropped.part"):
        with open(ckpt.parent / part, "ab") as fh:
            fh.write(b"999\t{\"half a row")

    seen = []

    def spy(chunk):
        seen.extend(r["i"] for r in chunk)
        return mod.process(chunk)

    res = run_stage("toy", inp, out, spy, {"k": 1}, chunk_size=3, reader=mod.reader, encode=mod.encode,
                    progress=False)
    assert seen == list(range(done, 60))            # resumed, nothing processed twice
    assert _files(out) == _files(ref)
    assert res.meta["counts"] == json.loads((ref / "meta.json").read_text())["counts"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("use_dist", [False, True], ids=["file-barrier", "gloo"])
def test_two_ranks_equal_single_process(toy, tmp_path, use_dist):
    mod, script = toy
    inp = _write_input(tmp_path / "in.jsonl", 23)
    ref = tmp_path / "ref"
    _run(mod, inp, ref, chunk=4)
    out = tmp_path / "sharded"
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(inp), str(out), "2"],
                              env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, STAGE_DIST="1" if use_dist else "0"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se.decode()
    assert _files(out) == _files(ref)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert meta["counts"] == json.loads((ref / "meta.json").read_text())["counts"]
    # every rank returns the merged counts
    assert json.loads(outs[1][0].decode().strip().splitlines()[-1]) == meta["counts"]


def test_manifest_records_round_trip(tmp_path):
    from omnisource.data.annotations import ManifestRecord, ManifestWriter, iter_manifest

    with ManifestWriter(tmp_path / "in.jsonl", resume=False) as w:
        for i in range(7):
            w.write(ManifestRecord(f"img/{i}.jpg", "web_img", "image", i % 3, meta={"i": i}))

    def relabel(chunk):
        return [Outcome(None, "odd") if r.meta["i"] % 2 else
                Outcome(ManifestRecord(r.path, r.source, r.kind, r.query_label, label=r.query_label, score=0.5))
                for r in chunk]

    res = run_stage("relabel", tmp_path / "in.jsonl", tmp_path / "out", relabel, {}, chunk_size=2, progress=False)
    recs = list(iter_manifest(res.manifest))
    assert [r.path for r in recs] == ["img/0.jpg", "img/2.jpg", "img/4.jpg", "img/6.jpg"]
    assert all(r.label == r.query_label and r.score == 0.5 for r in recs)
    assert res.meta["counts"]["in"]["by_class"] == {"0": 3, "1": 2, "2": 2}
    assert res.meta["counts"]["out"]["by_class"] == {"0": 2, "1": 1, "2": 1}
    assert res.meta["counts"]["dropped"]["by_class"] == {"0": 1, "1": 1, "2": 1}

    def bad(chunk):
        return [Outcome(ManifestRecord(r.path, r.source, "audio", None)) for r in chunk]

    from omnisource.errors import InputError
    with pytest.raises(InputError, match="kind"):
        run_stage("bad", tmp_path / "in.jsonl", tmp_path / "bad", bad, {}, progress=False)


def test_streams_in_bounded_chunks(toy, tmp_path):
    """The runner never reads more than one chunk ahead of what it has processed and written."""
    mod, _ = toy
    inp = _write_input(tmp_path / "in.jsonl", 50)
    state = {"read": 0, "done": 0, "ahead": 0}

    def reader(path):
        for row in mod.reader(path):
            state["read"] += 1
            state["ahead"] = max(state["ahead"], state["read"] - state["done"])
            yield row

    def process(chunk):
        assert len(chunk) <= 8
        state["done"] += len(chunk)
        return mod.process(chunk)

    run_stage("toy", inp, tmp_path / "out", process, {"k": 1}, chunk_size=8, reader=reader, encode=mod.encode,
              progress=True)
    assert state["done"] == 50 and state["ahead"] <= 8


def test_soft_labelled_records_count_under_their_argmax_class():
    from types import SimpleNamespace

    from omnisource.web.stage import record_class

    assert record_class(SimpleNamespace(label=[0.2, 0.45383, 0.237412, 0.1], query_label=3)) == "1"
    assert record_class({"label": None, "query_label": 2}) == "2"
    assert record_class({"label": [1, 3]}) == "1,3"


def test_a_second_run_of_a_stage_into_the_same_folder_is_refused(toy, tmp_path):
    """Stage folders are locked per rank: the second run says who holds it (ConfigError, exit 2)."""
    from omnisource.errors import ConfigError
    from omnisource.utils.lock import WorkDirLock

    mod, _ = toy
    inp = _write_input(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    with WorkDirLock(out, what="stage toy (rank 0)", name=".lock-rank0"):
        with pytest.raises(ConfigError, match=r"in use by stage toy \(rank 0\)"):
            _run(mod, inp, out)
    res = _run(mod, inp, out)            # free again
    assert res.meta["counts"]["out"]["total"] > 0

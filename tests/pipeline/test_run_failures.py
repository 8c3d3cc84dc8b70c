"""`omnisource run` stops on a stage that fails: bad input is one line and exit 2, an unexpected
exception one line and exit 1 with its traceback in the stage folder; never exit 0, never a
student trained on what is left. One run per work dir. (No training: they stop early.)"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnisource.cli import main
from omnisource.errors import ConfigError
from omnisource.pipeline.config import load_run_settings


def _layout(root: Path, web_videos: str, classes: int = 4) -> Path:
    (root / "target").mkdir(parents=True)
    (root / "label_map.txt").write_text("".join(f"class{i}\n" for i in range(classes)))
    (root / "target" / "train.txt").write_text("t0.mp4 0\n")
    (root / "target" / "val.txt").write_text("v0.mp4 1\n")
    (root / "web" / "videos").mkdir(parents=True)
    (root / "web" / "videos" / "list.txt").write_text(web_videos)
    return root


def test_a_bad_web_list_line_stops_the_run_with_one_line(tmp_path, capsys):
    data = _layout(tmp_path / "data", "w_ok.mp4 class1\nw_cake.mp4 9\n")
    work = tmp_path / "w"
    code = main(["run", "--data", str(data), "--work-dir", str(work), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    line = next(x for x in err.splitlines() if "error:" in x)
    assert "stage check:" in line and "list.txt:2: query label 9 outside the label map" in line
    assert "Traceback" not in err
    res = json.loads((work / "results.json").read_text())
    assert res["complete"] is False and res["stages"]["check"]["status"] == "failed"
    assert "teacher" not in res["stages"]              # nothing ran after it
    assert (work / "stages" / "check" / "error.log").is_file()


def test_query_labels_may_be_class_names_in_every_stage(tmp_path):
    """The check stage reads web lists with the ingest stage's parser (names were rejected)."""
    from omnisource.pipeline.run import Pipeline

    data = _layout(tmp_path / "data", "w_ok.mp4 class1\nw_b.mp4\tclass3\nw_c.mp4 0\n")
    p = Pipeline(tmp_path / "w", data, load_run_settings(None, ["check.quick=true"]), say=lambda m: None,
                 progress=False)
    sdir = tmp_path / "sdir"
    sdir.mkdir()
    out = p._stage_check(sdir)
    assert out["web_videos"]["total"] == 3      # all three rows parsed (files are missing)
    rep = json.loads((sdir / "web_videos.json").read_text())
    assert rep["by_class"]["class1"]["total"] == 1 and rep["by_class"]["class3"]["total"] == 1


def test_an_unexpected_exception_ends_the_run_non_zero_with_its_traceback_saved(tmp_path, capsys, monkeypatch):
    from omnisource.pipeline import run as run_mod

    def boom(self, sdir):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(run_mod.Pipeline, "_stage_check", boom)
    data = _layout(tmp_path / "data", "w_ok.mp4 1\n")
    code = main(["run", "--data", str(data), "--work-dir", str(tmp_path / "w"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "stage check crashed: TypeError" in err and "error.log" in err and "Traceback" not in err
    log = (tmp_path / "w" / "stages" / "check" / "error.log").read_text()
    assert "Traceback" in log and "boom" in log


@pytest.mark.parametrize("item, match", [
    ("train.epochs=abc", "train.epochs must be an integer, got 'abc'"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.epochs=[", r"--set train.epochs=\[:"),
    ("filter.agree=maybe", "filter.agree must be true/false"),
    ("train.lr=fast", "train.lr must be a number"),
])
def test_run_settings_are_validated_before_any_stage(item, match, tmp_path, capsys):
    with pytest.raises(ConfigError, match=match):
        load_run_settings(None, [item])
    assert main(["run", "--work-dir", str(tmp_path / "w"), "--set", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not (tmp_path / "w" / "stages").exists()
    assert load_run_settings(None, ["train.lr=1"]).train.lr == 1     # an integer is a number


def test_two_runs_on_one_work_dir_the_second_is_refused(tmp_path):
    """A second run (another process) says who holds the work dir and exits 2; the lock goes
    with its holder, however that ends."""
    work = tmp_path / "w"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from omnisource.utils.lock import WorkDirLock\n"
        f"l = WorkDirLock({str(work)!r}, what='omnisource run'); l.acquire(); print('held', flush=True)\n"
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run([sys.executable, "-m", "omnisource", "run", "--work-dir", str(work), "--reduced"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "in use by omnisource run (pid " + str(holder.pid) in r.stderr
        assert not (work / "stages").exists()
    finally:
        holder.kill()
        holder.wait()
    from omnisource.utils.lock import WorkDirLock

    with WorkDirLock(work):            # kill -9'd holder: the kernel dropped its lock
        with pytest.raises(ConfigError, match="in use by"):
            WorkDirLock(work).acquire()  # a second holder in the same process is refused too


def test_sigterm_prints_the_same_message_and_hint_as_ctrl_c(tmp_path):
    """SIGTERM unwinds like Ctrl-C: one line with the resume hint, exit 143, no traceback."""
    import signal

    code = ("import sys, time\nfrom omnisource import cli\n"
            "import omnisource.commands.probe as m\n"
            "def slow(args):\n    print('started', flush=True); time.sleep(60)\n"
            "m.run = slow\nsys.exit(cli.main(['probe', 'x']))\n")
    for sig, status, name in ((signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "started"
        time.sleep(0.2)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        assert p.returncode == status, err
        assert err.strip() == f"omnisource probe: interrupted ({name}); run the same command again", err


def test_an_interrupt_turned_into_a_library_error_is_still_an_interruption(capsys, monkeypatch):
    """SIGTERM inside torch.save made its zip writer raise RuntimeError('unexpected pos') while
    unwinding: the chain still holds the interrupt, so the one message and 143 follow."""
    from omnisource import cli
    import omnisource.commands.probe as m

    def cut(args):
        try:
            raise cli.Terminated()
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 347392 vs 347288")

    monkeypatch.setattr(m, "run", cut)
    assert cli.main(["probe", "x"]) == 143
    assert capsys.readouterr().err.strip() == "omnisource probe: interrupted (SIGTERM); run the same command again"


def test_workers_leave_sigterm_to_the_main_process_and_hush_the_fd_sharer():
    import signal
    import sys as _sys

    from omnisource.data import workers

    seen = []
    hook = workers._quiet_resource_sharer(lambda *a: seen.append(a[0]))

    def raise_in(filename):
        code = compile("raise BrokenPipeError(32, 'Broken pipe')", filename, "exec")
        try:
            exec(code, {})
        except BrokenPipeError:
            return _sys.exc_info()

    hook(*raise_in("/usr/lib/python3.11/multiprocessing/resource_sharer.py"))
    assert seen == []                               # the fd-sharing thread's broken pipe: dropped
    hook(*raise_in("/work/omnisource/x.py"))
    assert seen == [BrokenPipeError]                # anything else still reported
    old = signal.getsignal(signal.SIGTERM)
    old_hook = _sys.excepthook
    try:
        workers.ignore_sigterm()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)
        _sys.excepthook = old_hook

"""Run a script as 2 torchrun-style ranks (RANK / WORLD_SIZE / MASTER_* in the environment).

Shared by the sharding tests of the model-driven stages (dedup, untrimmed): the issue asks that
every stage, run as 2 gloo processes, writes the same bytes as one process.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(script: Path, args: list[str], timeout: float = 240.0, **extra_env: str) -> list[str]:
    """Start ranks 0 and 1 of ``script`` with ``args``; fail with rank stderr; return their stdouts.

    ``tests/web`` is on PYTHONPATH so that the script can import the tests' toy models.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]), WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1", **extra_env)
    procs = [subprocess.Popen([sys.executable, str(script), *args], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    outs = []
    try:
        for r, p in enumerate(procs):
            so, se = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"rank {r} failed:\n{se.decode()[-3000:]}"
            outs.append(so.decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs

"""Offline means zero network calls: the tiny chain and a sweep with its report run with every socket refused."""

import os
import subprocess
import sys
import textwrap

from conftest import STYLES

BLOCKED = textwrap.dedent("""
    import socket, sys
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network blocked by test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import sdrag
    wb = sdrag.Workbench.from_preset("tiny", library_dir={lib!r})
    report = wb.library.ingest({styles!r}, progress=False)
    res = wb.run(sdrag.SAMPLE_SKETCH, "a neon city", size=64, steps=2)
    run = sdrag.run_sweep({{"base": {{"prompt": "a neon city", "steps": 1, "size": 64}}, "styles": {styles!r},
                           "axes": {{"controlnet_scale": [0.5, 1.0], "seed": [0, 1]}}}}, out_dir={out!r},
                          preset="tiny", workbench=wb, progress=False)
    print(len(report.added), res.image.size, (run.table["status"] == "ok").sum(), "attempts:", attempts)
""")


def test_tiny_chain_and_sweep_make_no_network_calls(tmp_path):
    code = BLOCKED.format(lib=str(tmp_path / "lib"), styles=str(STYLES), out=str(tmp_path / "run"))
    # Without HF_HUB_OFFLINE: the tiny preset must need no flag to stay off the network.
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith("(64, 64) 4 attempts: []"), last

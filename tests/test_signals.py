"""A stop signal that arrives while a trial imports a module waits for the import to finish: raised inside the
import, it left a C extension half imported, and the next import of scipy.optimize failed with pybind11's
"type ... is already registered" (a scancel'ed SLURM task recorded that ImportError as its trial's reason
instead of 'interrupted')."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from crash_helpers import ROOT

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import optuna
    from dse.trials import signals

    sys.path.insert(0, sys.argv[1])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    signals.install()
    study = optuna.create_study()

    def fn(trial):
        import slow_module  # its top level sends this process SIGTERM, then goes on for 0.3 s
        time.sleep(5)
        return 1.0

    try:
        study.optimize(signals.guard(fn), n_trials=1)
        print("not interrupted")
    except signals.TrialInterrupted as exc:
        print("interrupted:", exc)
    module = sys.modules.get("slow_module")
    print("imported whole:", getattr(module, "DONE", False))
    print("reason:", study.trials[0].user_attrs.get("reason"))
""")
MODULE = textwrap.dedent("""
    import os, signal, time
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
    DONE = True
""")


def test_a_signal_during_an_import_lands_after_it(tmp_path):
    (tmp_path / "slow_module.py").write_text(MODULE)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("interrupted:"), run.stdout + run.stderr[-2000:]
    assert "imported whole: True" in lines, run.stdout  # before: the raise cut the import short (False)
    assert "reason: interrupted" in lines, run.stdout

"""The watched child of a distributed run (fashion_jax.supervisor), with stand-in children: each
way a peer's death can reach this process ends in one `error:` line and exit 2."""

import sys
import textwrap
from types import SimpleNamespace

import pytest

from fashion_jax import supervisor

CONFIG = SimpleNamespace(num_processes=2, distributed_timeout_seconds=15)

# What a process whose peer died prints, in the two orders seen: a collective fails in Python
# first (Gloo, "Connection reset by peer"), or JAX's coordination service aborts it (glog fatal
# line, then a C++ stack dump, SIGABRT).
GLOO = "UNKNOWN: Gloo all-reduce failed: [pair.cc:538] Read error [127.0.0.1]:51336: Connection reset by peer"
ABORT = textwrap.dedent(
    """
    import os, sys
    sys.stderr.write("F1202 01:02:00.612916   18239 client.h:80] Terminating process because the "
                     "JAX distributed service detected fatal errors.\\n"
                     "  absl::Status: UNAVAILABLE: Task 1 heartbeat timeout.\\n"
                     "*** Check failure stack trace: ***\\n    @ 0x7f00 abort\\n")
    sys.stderr.flush()
    os.abort()
    """
)
CHILDREN = {
    "collective": f"""
        import jax, sys
        from fashion_jax import exits
        def body():
            print("step 10: training", file=sys.stderr)
            raise jax.errors.JaxRuntimeError({GLOO!r})
        sys.exit(exits.guarded(body, "CMD", {{}}))
    """,
    "collective_then_abort": f"""
        import atexit, jax, sys
        from fashion_jax import exits
        atexit.register(lambda: exec({ABORT!r}))
        def body():
            print("step 10: training", file=sys.stderr)
            raise jax.errors.JaxRuntimeError({GLOO!r})
        sys.exit(exits.guarded(body, "CMD", {{}}))
    """,
    "collective_in_a_thread_then_abort": f"""
        import jax, sys, threading
        from fashion_jax import exits
        def save():  # Orbax's checkpoint thread waiting at a barrier.
            raise jax.errors.JaxRuntimeError({GLOO!r})
        def body():
            print("step 10: training", file=sys.stderr)
            thread = threading.Thread(target=save)
            thread.start()
            thread.join()
            exec({ABORT!r})
        sys.exit(exits.guarded(body, "CMD", {{}}))
    """,
    "abort": f"""
        import sys
        print("step 10: training", file=sys.stderr)
        exec({ABORT!r})
    """,
}


def watch(tmp_path, monkeypatch, source):
    (tmp_path / "child_module.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(sys.path)}")
    return supervisor.run_watched([], "child_module", CONFIG, "python -m fashion_jax.run W")


@pytest.mark.parametrize("child", sorted(CHILDREN))
def test_a_lost_peer_ends_in_one_line(tmp_path, monkeypatch, capfd, child):
    status = watch(tmp_path, monkeypatch, CHILDREN[child])
    err = capfd.readouterr().err
    assert status == 2, err
    assert err.count("error:") == 1, err
    assert "Traceback" not in err and "Check failure" not in err and "@ 0x7f00" not in err, err
    assert err.startswith("step 10: training\n"), err  # The child's own output passes through.
    line = err.splitlines()[-1]
    assert line.startswith("error: the distributed run stopped: ")
    assert ("Connection reset by peer" if "collective" in child else "heartbeat timeout") in line
    assert "python -m fashion_jax.run W" in line


def test_any_other_end_is_the_childs_own(tmp_path, monkeypatch, capfd):
    status = watch(tmp_path, monkeypatch, "import sys\nprint('out')\nraise ValueError('mine')\n")
    out, err = capfd.readouterr()
    assert status == 1 and out == "out\n"
    assert "Traceback" in err and "ValueError: mine" in err and "error:" not in err


def test_outside_a_watched_child_a_runtime_error_is_not_taken_for_a_lost_peer(monkeypatch):
    import jax

    monkeypatch.delenv(supervisor.CHILD, raising=False)
    assert supervisor.collective_failed(jax.errors.JaxRuntimeError(GLOO)) is None
    monkeypatch.setenv(supervisor.CHILD, "1")
    assert supervisor.collective_failed(ValueError(GLOO)) is None
    assert supervisor.collective_failed(jax.errors.JaxRuntimeError(GLOO)).endswith(
        "Connection reset by peer"
    )

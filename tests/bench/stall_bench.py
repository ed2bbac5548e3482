"""nng 1.5.2 stall benchmark (issue 19's goals, docs/reliability.md): no
watchdog restart in many stack starts under the fault suite's SQLITE_BUSY
faults, and none in many connect-and-hang-up probes per service socket
(RPC and event publishers), each probe round followed by a Ping or a new
subscriber that must be answered.

    MAGNETAR_BUILD=$PWD/build /usr/bin/python3 tests/bench/stall_bench.py [starts] [probes]

Defaults: 500 starts, 1000 probes per socket. Not run by `make test`
(tests/integration/test_listener_stall.py runs 100 probes in CI). Prints
the counts; exits 1 on any restart, a start that never became ready, or
an unanswered probe round.
"""
import os
import pathlib
import re
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
from conftest import Stack  # noqa: E402
from test_listener_stall import hang_up, heard_within  # noqa: E402

STARTS = int(sys.argv[1]) if len(sys.argv) > 1 else 500
PROBES = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
SERVICES = ("gateway", "auth", "audit", "breach", "terminal")
PUBLISHERS = (("auth", "auth-events.sock"), ("audit", "audit-events.sock"))


def stack_dir():
    d = tempfile.mkdtemp(prefix="magstall-")
    os.chmod(d, 0o755)  # as root the services must traverse it
    return d


def restarts(stack):
    return len(re.findall(r"started \S+ pid=\d+ \(restart\)",
                          stack.log_path.read_text(errors="replace")))


def relistens(stack):
    text = stack.log_path.read_text(errors="replace")
    return len(re.findall(r"listening again", text))


def starts():
    bad, restarted, relisten = 0, 0, 0
    for i in range(STARTS):
        s = Stack(stack_dir(), {"MAGNETAR_FAULT_SQLITE_BUSY": "13"})
        try:
            s.start()
        except AssertionError:
            bad += 1
            print(f"start {i}: never ready", flush=True)
            continue
        time.sleep(1)  # a start's first seconds are when stalls were seen
        restarted += restarts(s)
        relisten += relistens(s)
        s.stop()
        if (i + 1) % 50 == 0:
            print(f"{i + 1} starts: {bad} never ready, {restarted} restarts, "
                  f"{relisten} re-listens", flush=True)
    return bad, restarted, relisten


def probes():
    s = Stack(stack_dir()).start()
    unanswered = 0
    try:
        run = pathlib.Path(s.dir) / "run"
        for svc in SERVICES:
            for i in range(1, PROBES + 1):
                hang_up(run / f"{svc}.sock")
                if i % 50 == 0 and s.magctl("-t", "2000", "ping", svc).returncode != 0:
                    unanswered += 1
        for svc, sock in PUBLISHERS:
            for i in range(1, PROBES + 1):
                hang_up(run / sock)
                if i % 100 == 0 and not heard_within(s, sock):
                    unanswered += 1
        stats = {svc: s.stats(svc) for svc in SERVICES}
        return unanswered, restarts(s), {
            svc: (st.get("rpc.relisten"), st.get("events.relisten")) for svc, st in stats.items()}
    finally:
        s.stop()


def main():
    bad, restarted, relisten = starts()
    print(f"starts: {STARTS} under SQLITE_BUSY=13: {bad} never ready, {restarted} restarts, "
          f"{relisten} re-listens")
    unanswered, restarted2, counts = probes()
    print(f"probes: {PROBES} hang-ups per socket: {unanswered} unanswered rounds, "
          f"{restarted2} restarts; (rpc.relisten, events.relisten) per service: {counts}")
    sys.exit(1 if bad or restarted or unanswered or restarted2 else 0)


if __name__ == "__main__":
    main()

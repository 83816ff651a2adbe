#!/usr/bin/env python3
"""newresource-controller, in Python: reconciles NewResource objects while the leader sidecar
in the same pod grants leadership. A drop-in replacement for the Rust controller container
(``controller/``): same flags, log lines, probes and metrics. Standard library only.

Startup order (as ``controller/src/main.rs``): flags -> logging -> API client -> bind the
probe and metrics ports -> ``newresource-controller starting`` (with the bound addresses) ->
leadership follower -> API check -> serve the ports -> the window loop.

Shutdown (SIGTERM or SIGINT): close the active window first (workers stopped, ``active window
ended`` with reason ``shutdown``), THEN ``POST /leader/yield`` (2 s at most), then
``newresource-controller stopped``, exit 0. Yielding only after the workers have stopped is
what makes the fast hand-over safe: the next leader may start the moment the sidecar releases
the Lease. A second signal during shutdown exits at once with status 1.

Signals are blocked in every thread and received synchronously with ``sigwait`` by the main
thread, so no handler ever runs in the middle of code holding a lock.

If an essential thread (the leadership follower or the window loop) dies of an unexpected
exception, the process logs it and exits with status 1 at once (``os._exit``, which also ends
any write in flight): a controller silently running without its follower would keep a stale
gate, and one without its window loop would look healthy while doing nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

# Never write __pycache__ next to the modules, whatever the environment: the image's root
# filesystem is read-only, and a source checkout stays clean.
sys.dont_write_bytecode = True
# Run from anywhere: the modules live next to this file, and the leader_client package
# (clients/python) is found as leaderpath.py explains: installed, next to the modules (the
# image), or in this source checkout.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import leaderpath  # noqa: E402

leaderpath.ensure()

import admin  # noqa: E402
import config  # noqa: E402
import kube  # noqa: E402
import logs  # noqa: E402
from leader_client.follow import Follower, Heartbeat, SidecarClient, SourceError  # noqa: E402
from leader_client.gate import LeadershipGate  # noqa: E402
from metrics import Metrics  # noqa: E402
from workers import Workers  # noqa: E402

log = logs.get()

#: How long the yield on shutdown may take before we exit anyway (the sidecar then releases
#: after our last grant runs out).
YIELD_TIMEOUT = 2.0
#: Threads whose death must end the process.
ESSENTIAL = {"leader-follower", "window-loop"}
SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _exit_now(code: int) -> None:
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def _excepthook(args: threading.ExceptHookArgs) -> None:
    """Logs an unhandled exception of any thread on one line; ends the process if the thread
    is essential."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    tb = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    log.error("unhandled exception in a thread", thread=name,
              error=f"{args.exc_type.__name__}: {args.exc_value}", traceback=tb)
    if name in ESSENTIAL:
        log.error("an essential thread died; exiting", thread=name)
        _exit_now(1)


def _bind(address, flag: str):
    if address is None:
        return None
    try:
        return admin.AdminServer(address, {})
    except OSError as e:
        raise RuntimeError(f"cannot listen on {config.format_address(address)} ({flag}): {e}") from None


def main(argv=None) -> int:
    # Before any thread exists, so every thread inherits the mask (see the module docstring).
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    settings = config.parse_or_exit(sys.argv[1:] if argv is None else argv, os.environ)
    logs.configure(settings.log_format)
    threading.excepthook = _excepthook

    try:
        client = kube.KubeClient.from_access(settings.api, settings.api_timeout)
        metrics_server = _bind(settings.metrics_bind_address, "--metrics-bind-address")
        health_server = _bind(settings.health_probe_bind_address, "--health-probe-bind-address")
    except (kube.ConfigError, RuntimeError) as e:
        log.error(str(e))
        return 1

    log.info(
        "newresource-controller starting",
        leader_url=settings.leader_url or "none (--leader-elect=false)",
        namespace=settings.namespace or "all",
        metrics=metrics_server.address if metrics_server else "disabled",
        health=health_server.address if health_server else "disabled",
    )

    metrics = Metrics()
    sidecar = SidecarClient(settings.leader_url, kube.USER_AGENT) if settings.leader_url else None
    heartbeat = Heartbeat()
    if sidecar is not None:
        gate = LeadershipGate()
        Follower(sidecar, settings.leader_poll_interval, gate, heartbeat).start()
    else:
        gate = LeadershipGate.always_open()

    api_check = admin.ApiCheck(client, settings.namespace, metrics)
    api_check.start()

    probes = admin.Probes(
        gate=gate,
        needs_sidecar=sidecar is not None,
        api_ok=lambda: api_check.ok,
        heartbeat_age=heartbeat.age if sidecar is not None else None,
        wedged_after=max(settings.leader_poll_interval * 10, 10.0),
    )
    if health_server is not None:
        health_server.set_routes(admin.health_routes(probes))
        health_server.start("health-server")
    if metrics_server is not None:
        metrics_server.set_routes(admin.metrics_routes(metrics))
        metrics_server.start("metrics-server")

    workers = Workers(client, settings.namespace, settings.max_concurrent_reconciles, gate, metrics)
    window_loop = threading.Thread(target=workers.run, name="window-loop", daemon=True)
    window_loop.start()

    received = signal.sigwait(SIGNALS)
    log.info("shutting down", signal=signal.Signals(received).name)

    def second_signal() -> None:
        again = signal.sigwait(SIGNALS)
        log.warn("second signal during shutdown; exiting at once", signal=signal.Signals(again).name)
        _exit_now(1)

    threading.Thread(target=second_signal, name="second-signal", daemon=True).start()

    workers.shutdown()
    window_loop.join()

    # Workers have stopped: let the sidecar hand over now rather than when our grant runs out.
    if sidecar is not None:
        try:
            was_leader, backoff_ms = sidecar.yield_leadership(YIELD_TIMEOUT)
            log.info("yielded leadership", was_leader=was_leader, backoff_ms=backoff_ms)
        except SourceError as e:
            log.warn("could not yield leadership", error=str(e))
    log.info("newresource-controller stopped")
    return 0


def run() -> None:
    """Runs :func:`main` and exits with its status; an unexpected exception in the main
    thread is logged on one line (like any other thread's) and exits with status 1."""
    try:
        code = main()
    except SystemExit:
        raise  # --help, --version, usage errors
    except BaseException as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        log.error("newresource-controller failed", error=f"{type(e).__name__}: {e}", traceback=tb)
        code = 1
    # os._exit: daemon threads blocked in sockets must not run during interpreter teardown.
    _exit_now(code)


if __name__ == "__main__":
    run()

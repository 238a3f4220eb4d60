"""`immich check|index|push|send|register|unregister|jobs`: everything that talks to an Immich server.

The server and key come from `--server` / `--api-key`, else `IMMICH_URL` / `IMMICH_API_KEY`, else the
settings' `immich_url` and the key the window saved in the OS keyring.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from immich_ml_desktop.cli.common import (
    add_engine_options,
    add_json_option,
    add_library_options,
    add_task_option,
    engine_from_args,
    library_settings_from_args,
    open_library,
    print_json,
    settings_from_args,
    task_specs_from_args,
)
from immich_ml_desktop.errors import InvalidInputError


def register(sub: Any) -> None:
    p = sub.add_parser("immich", help="connect to an Immich server: check, index, push people, drive its ML")
    actions = p.add_subparsers(dest="immich_command", metavar="ACTION", required=True)

    check = actions.add_parser("check", help="server version and what the API key may do")
    _server_options(check)
    check.set_defaults(func=run_check)

    index = actions.add_parser("index", help="index the server's assets (their previews) into the library")
    _server_options(index)
    add_library_options(index)
    index.add_argument("--no-clip", action="store_true", help="compute faces only")
    index.add_argument("--no-faces", action="store_true", help="compute CLIP vectors only")
    add_task_option(index)
    index.add_argument("--images-only", action="store_true", help="leave out the preview frames of videos")
    index.add_argument("--retry-failed", action="store_true", help="try assets that failed before again")
    add_engine_options(index)
    index.set_defaults(func=run_index)

    push = actions.add_parser("push", help="push the reviewed people to Immich (plan, apply, undo)")
    _server_options(push)
    add_library_options(push, clip=False)
    mode = push.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show the plan; write nothing")
    mode.add_argument("--resume", action="store_true", help="finish the last push that was interrupted")
    mode.add_argument("--undo", action="store_true", help="revert the last push (or the one given by --plan)")
    push.add_argument("--plan", type=Path, help="a saved plan file (with --resume or --undo)")
    push.add_argument("--all-groups", action="store_true",
                      help="push every face group, not only those reviewed (named, hidden, merged, edited); suggested pairs only once confirmed")
    push.set_defaults(func=run_push)

    reg = actions.add_parser("register", help="put our ML server's URL first in Immich's ML URLs (admin key)")
    _server_options(reg)
    reg.add_argument("--ml-url", help="our server's URL as Immich reaches it (default: this machine's address "
                                      "on the route to Immich and the settings' port)")
    reg.add_argument("--download", action="store_true", help="download the models Immich uses if missing")
    add_engine_options(reg)
    reg.set_defaults(func=run_register)

    unreg = actions.add_parser("unregister", help="take our ML server's URL out of Immich's ML URLs (admin key)")
    _server_options(unreg)
    unreg.add_argument("--ml-url", help="the URL to take out (default: as for register)")
    unreg.set_defaults(func=run_unregister)

    send = actions.add_parser(
        "send", help="get what the library computed into Immich: Immich's ML jobs answered from the library (admin key)",
        description="Starts our ML server (answers Immich's requests from what `immich index` computed), puts its "
        "URL first in Immich's ML URLs, queues smartSearch and faceDetection (OCR where the library has it) for the "
        "assets that lack them, shows progress, and puts Immich's ML URLs back when done, on Ctrl-C, or after a "
        "crash with --restore.")
    _server_options(send)
    add_library_options(send)
    send.add_argument("--force", action="store_true", help="CLIP and OCR of every asset, not only those missing "
                      "(faces never: Immich's forced face detection deletes its faces and people)")
    send.add_argument("--restore", action="store_true", help="only put Immich's ML URLs back after a send that was killed")
    send.add_argument("--ml-url", help="use our ML server already running at this URL (as Immich reaches it) "
                                       "instead of starting one")
    send.add_argument("--port", type=int, default=0, help="port of the ML server it starts (default: a free one)")
    send.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help="how often to read Immich's queues")
    send.add_argument("--stall-after", type=float, default=600.0, metavar="SECONDS",
                      help="stop (and put the URLs back) when Immich's queues hold jobs but have not moved for this "
                           "long, e.g. a paused queue (default: %(default)s)")
    add_engine_options(send)
    send.set_defaults(func=run_send)

    jobs = actions.add_parser("jobs", help="Immich's ML queues; start smart search, face detection, OCR (admin key)")
    _server_options(jobs)
    jobs.add_argument("--start", nargs="+", choices=["smartSearch", "faceDetection", "facialRecognition", "ocr", "all"],
                      help="queue the assets for these jobs (facialRecognition groups detected faces into people)")
    jobs.add_argument("--force", action="store_true", help="with --start: all assets, not only those missing")
    jobs.add_argument("--watch", type=float, metavar="SECONDS",
                      help="poll every SECONDS until the queues are empty, with the rate and an ETA")
    jobs.set_defaults(func=run_jobs)


def _server_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Immich server")
    g.add_argument("--server", help="Immich URL, with or without /api (default: $IMMICH_URL or the settings)")
    g.add_argument("--api-key", help="API key (default: $IMMICH_API_KEY or the one saved in the keyring)")
    add_json_option(parser)


def _client(args: argparse.Namespace):  # -> ImmichClient
    from immich_ml_desktop.immich.client import ImmichClient
    from immich_ml_desktop.immich.credentials import saved_api_key

    server = args.server or os.environ.get("IMMICH_URL") or settings_from_args(args).immich_url
    if not server:
        raise InvalidInputError("Which Immich server? Pass --server URL or set IMMICH_URL.")
    key = args.api_key or os.environ.get("IMMICH_API_KEY") or saved_api_key(server)
    client = ImmichClient(server, key or "")
    client.check_version()
    return client


def run_check(args: argparse.Namespace) -> int:
    with _client(args) as client:
        version = client.check_version()
        key = client.check_key()
    from immich_ml_desktop.immich.client import FEATURES

    if args.json:
        print_json({"server": client.base_url, "version": str(version), "key": key.name,
                    "permissions": list(key.permissions), "admin": key.is_admin, "missing": key.missing})
        return 0
    admin = {True: "admin", False: "not an admin", None: "admin unknown (no user.read)"}[key.is_admin]
    print(f"Immich {version} at {client.base_url}; key '{key.name}' ({admin})")
    for feature in FEATURES:
        lacks = key.missing.get(feature)
        print(f"  {feature:16} " + ("ok" if not lacks else "needs " + ", ".join(lacks)))
    return 0


def run_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from immich_ml_desktop.library.immich_source import ImmichSource
    from immich_ml_desktop.app_engine import build_engine
    from immich_ml_desktop.server.answer_cache import open_answer_cache
    from immich_ml_desktop.models.runtime import default_parallel
    from immich_ml_desktop.services.index import IndexJob, IndexProgress

    settings = library_settings_from_args(args)
    bar = tqdm(total=0, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)

    def progress(p: IndexProgress) -> None:
        bar.total = p.total
        bar.n = p.done
        bar.set_description(p.state, refresh=False)
        bar.set_postfix_str(f"{p.failed} failed" if p.failed else "", refresh=False)
        bar.refresh()

    answers = open_answer_cache(settings.answer_cache_mb)  # for `immich send`: Immich's answers, not computed twice
    with _client(args) as client, open_library(settings) as store, \
            build_engine(settings, parallel=default_parallel()) as engine:
        job = IndexJob(
            store, engine, ImmichSource(client, include_videos=not args.images_only),
            clip_model=None if args.no_clip else settings.clip_model,
            face_model=None if args.no_faces else settings.face_model,
            face_min_score=settings.face_min_score, face_passes=settings.face_passes, progress=progress,
            retry_failed=args.retry_failed,
            tasks=task_specs_from_args(args), answers=answers,
        )
        previous = signal.signal(signal.SIGINT, lambda *_: job.cancel())  # Ctrl-C keeps what is done
        try:
            summary = job.run()
        finally:
            signal.signal(signal.SIGINT, previous)
            bar.close()
    if args.json:
        print_json({**summary.to_dict(), "server": client.base_url, "library": str(store.path)})
    else:
        print(f"{summary.indexed} indexed, {summary.failed} failed, {summary.faces} faces "
              f"({summary.new} new, {summary.changed} changed, {summary.removed} removed, "
              f"{summary.unchanged} unchanged) in {summary.seconds:.1f} s"
              + (" - cancelled" if summary.cancelled else ""))
        if summary.no_preview:
            names = ", ".join(summary.no_preview[:5]) + (", ..." if len(summary.no_preview) > 5 else "")
            print(f"{len(summary.no_preview)} assets have no preview in Immich yet, so Immich's ML has not seen them "
                  f"either ({names}): Immich makes previews after an upload, and cannot for formats its build does "
                  "not decode (e.g. some HEIC or 10-bit AVIF). A later run indexes them once they have one.")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.services.push import PushPlan, PushRun, build_plan, pushes_dir, reviewed_people

    settings = library_settings_from_args(args)
    folder = pushes_dir(settings.library_path)
    if not (args.resume or args.undo):
        open_library(settings, create=False).close()  # a mistyped --library is named before Immich is asked
    with _client(args) as client:
        if args.resume or args.undo:
            plan = PushPlan.load(args.plan) if args.plan else PushPlan.latest(folder)
            if plan is None:
                raise InvalidInputError(f"No push to {'resume' if args.resume else 'undo'}: {folder} holds no plan.")
            if plan.state == ("reverted" if args.undo else "applied"):
                if not args.json:
                    print(f"push {plan.id} was already {plan.state}: nothing to do ({plan.path})")
                    return 0
            else:
                run = PushRun(client, plan, progress=_step_printer(args))
                plan = run.apply() if args.resume else run.revert()
        else:
            with open_library(settings, create=False) as store:
                people = reviewed_people(People(store, args.face_model), include_unreviewed=args.all_groups)
            if not people:
                raise InvalidInputError(
                    "No reviewed face groups with faces on this server's assets: index with `immich index`, "
                    "then name, merge or hide groups on the People page (or pass --all-groups)."
                )
            plan = build_plan(client, people)
            if not args.dry_run:
                plan.save(folder / f"push-{plan.id}.json")
                if not args.json:
                    print("\n".join(plan.describe()))
                PushRun(client, plan, progress=_step_printer(args)).apply()
    if args.json:
        print_json(plan.to_dict())
    elif args.dry_run:
        print("\n".join(plan.describe()))
        print("dry run: nothing was written to Immich")
    else:
        done, total = plan.progress()
        verb = "undone" if plan.state in ("reverting", "reverted") else "applied"
        print(f"push {plan.id} {plan.state}: {done}/{total} steps {verb}; plan and undo log in {plan.path}")
    return 0


def _step_printer(args: argparse.Namespace):
    def show(done: int, total: int, what: str) -> None:
        if not args.json:
            print(f"[{done}/{total}] {what}", file=sys.stderr)
    return show


def _ml_url(args: argparse.Namespace, client: Any) -> str:
    from immich_ml_desktop.services.immich_ml import reachable_url

    if args.ml_url:
        return args.ml_url
    settings = settings_from_args(args)
    return reachable_url(client.base_url, settings.server_port, settings.server_host)


def run_register(args: argparse.Namespace) -> int:
    from immich_ml_desktop.services import immich_ml

    with _client(args) as client:
        url = _ml_url(args, client)
        urls, changed = immich_ml.register_url(client, url)
        ml = immich_ml.read_ml_config(client)
    with engine_from_args(args) as engine:
        models = immich_ml.check_models(engine, ml, download=args.download)
    if args.json:
        print_json({"url": url, "urls": urls, "changed": changed, "ml_enabled": ml.enabled,
                    "models": [m.__dict__ for m in models]})
        return 0
    print(("registered" if changed else "already first") + ": Immich's ML URLs are now " + ", ".join(urls))
    if not ml.enabled:
        print("note: machine learning is switched off in Immich (Administration > Machine Learning)")
    for m in models:
        where = f" --cache-dir {args.cache_dir}" if getattr(args, "cache_dir", None) else ""
        state = "present" if m.present else f"MISSING (run with --download, or `models download {m.name}{where}`)"
        print(f"  {m.task} model {m.name}: {state}")
    return 0 if all(m.present for m in models) else 1


def run_unregister(args: argparse.Namespace) -> int:
    from immich_ml_desktop.services import immich_ml

    with _client(args) as client:
        url = _ml_url(args, client)
        urls, changed = immich_ml.unregister_url(client, url)
    if args.json:
        print_json({"url": url, "urls": urls, "changed": changed})
    else:
        print(("unregistered" if changed else f"{url} was not registered") + ": Immich's ML URLs are " + ", ".join(urls))
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    from immich_ml_desktop.services import immich_ml

    with _client(args) as client:
        names = tuple(immich_ml.ML_QUEUES)
        if args.start:
            wanted = list(names) if "all" in args.start else list(dict.fromkeys(args.start))
            immich_ml.start_jobs(client, wanted, force=args.force)
        watch = immich_ml.QueueWatch()
        width = max(map(len, names))
        while True:
            counts = immich_ml.queue_counts(client, names)
            rows = [(c, watch.done(c), watch.eta(c), watch.rate(c)) for c in counts]
            if args.json:
                print_json([{**c.__dict__, "done_since_start": done, "eta_seconds": eta, "per_second": rate}
                            for c, done, eta, rate in rows])
            else:
                for c, done, eta, rate in rows:
                    # Immich 3.1 counts no finished job: "done" is what left the queue while we watched.
                    print(f"{c.name:{width}}  waiting {c.waiting:6}  active {c.active:3}  done {done:6}"
                          + ("  paused" if c.paused else "")
                          + (f"  {rate:.1f}/s" if rate and c.remaining else "") + (f"  ETA {_duration(eta)}" if eta else ""))
            if not args.watch or all(c.remaining == 0 for c in counts):
                if args.watch and not args.json:
                    print(immich_ml.FAILURES_HINT)
                return 0
            time.sleep(args.watch)


def run_send(args: argparse.Namespace) -> int:
    import contextlib
    import socket
    from urllib.parse import urlsplit

    from immich_ml_desktop.app_engine import build_engine
    from immich_ml_desktop.models.runtime import default_parallel
    from immich_ml_desktop.server.answer_cache import open_answer_cache
    from immich_ml_desktop.server.ml_server import MlServer
    from immich_ml_desktop.services import immich_ml, send

    settings = library_settings_from_args(args)
    if not args.restore:
        open_library(settings, create=False).close()  # a mistyped --library is named before Immich is asked
    with _client(args) as client:
        if args.restore:
            state = send.SendState.load()
            if state is None:
                print("nothing to restore: no send was left unfinished")
                return 0
            urls = send.restore_urls(client, state)
            print("Immich's ML URLs are back as they were: " + ", ".join(urls))
            return 0
        with open_library(settings, create=False) as store:
            kinds = send.library_kinds(store, settings.clip_model, settings.face_model)
        warnings = send.differences(immich_ml.read_ml_config(client), settings.clip_model, settings.face_model,
                                    settings.face_min_score)
        with contextlib.ExitStack() as stack:
            stats = None
            ml_url = args.ml_url
            if not ml_url:
                answers = open_answer_cache(settings.answer_cache_mb)
                if answers is not None:
                    stack.callback(answers.close)
                engine = stack.enter_context(build_engine(settings, parallel=default_parallel()))
                # Listen where Immich reaches this machine; only Immich (and this machine) may call.
                host = urlsplit(immich_ml.reachable_url(client.base_url, 1, settings.server_host)).hostname or "127.0.0.1"
                immich_host = urlsplit(client.base_url).hostname or "127.0.0.1"
                with contextlib.suppress(OSError):
                    immich_host = socket.gethostbyname(immich_host)
                server = stack.enter_context(MlServer(engine, host=host, port=args.port, allow=[immich_host],
                                                      workers=engine.parallel, answers=answers))
                ml_url, stats = server.url, (lambda: server.stats)
            job = send.SendJob(client, ml_url, kinds=kinds, force=args.force, stats=stats, poll=args.poll,
                               progress=None if args.json else _send_printer(), warnings=warnings,
                               stalled_after=args.stall_after)
            previous = signal.signal(signal.SIGINT, lambda *_: job.cancel())  # Ctrl-C: stop and put the URLs back
            try:
                summary = job.run()
            finally:
                signal.signal(signal.SIGINT, previous)
    failed = summary.cancelled or summary.stalled
    if args.json:
        print_json(summary.to_dict())
        return 1 if failed else 0
    done = ", ".join(f"{name} {n}" for name, n in summary.done.items())
    counts = (f"{summary.from_library} answers from the library, {summary.computed} computed, {summary.errors} errors"
              if summary.counted else "the server there counts what it answered from the library")
    print(("cancelled" if summary.cancelled else "stopped" if summary.stalled else "sent") + f" in {_duration(summary.seconds)} through {summary.ml_url}: "
          + counts + (f" ({done} jobs done)" if done else ""))
    for note in summary.warnings:
        print(f"note: {note}")
    print("Immich's ML URLs are back as they were: " + ", ".join(summary.urls_restored))
    if failed:
        print("Jobs still queued in Immich go to those URLs; run `immich send` again to answer them from the library.")
    return 1 if failed else 0


def _send_printer():
    def show(p: Any) -> None:
        parts = []
        for q in p.queues:
            rate = f" {q.per_second:.1f}/s" if q.per_second and q.remaining else ""
            eta = f" ETA {_duration(q.eta)}" if q.eta and q.remaining else ""
            parts.append(f"{q.name} {q.remaining} left, {q.done} done{rate}{eta}")
        print(f"[{_duration(p.seconds)}] " + " | ".join(parts)
              + f" | from library {p.from_library}, computed {p.computed}" + (f", errors {p.errors}" if p.errors else ""),
              file=sys.stderr, flush=True)
    return show


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"

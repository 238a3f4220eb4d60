"""`serve`: be Immich's machine-learning service (put this URL in Immich's `machineLearning.urls`)."""

from __future__ import annotations

import argparse
import logging

from immich_ml_desktop.cli.common import add_engine_options, engine_from_args, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="answer Immich's ML requests (/predict) on this machine",
        description="Serve Immich's machine-learning protocol. Binds 127.0.0.1 unless --host says otherwise; "
        "the protocol has no authentication, so limit clients with --allow when listening on a network.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, help="port (default 3003, as Immich's ML service)")
    p.add_argument("--allow", nargs="+", metavar="ADDR", help="only these client addresses or networks (e.g. 192.168.1.20 or 192.168.1.0/24); this machine is always allowed")
    p.add_argument("--preload", nargs="+", metavar="NAME", help="load these models before serving (e.g. ViT-B-32__openai buffalo_l)")
    p.add_argument("--model-ttl", type=float, metavar="S", help="unload a model idle for S seconds (0 = never; default from settings, 300)")
    p.add_argument("--forward", metavar="URL", help="hand tasks or models this app cannot serve on to this ML service (e.g. http://immich-machine-learning:3003)")
    p.add_argument("--forward-timeout", type=float, metavar="S",
                   help="answer 504 when the --forward service has not answered for S seconds (default 300)")
    p.add_argument("--workers", type=int, help="requests computed at once (default: one per core, at most 4)")
    p.add_argument("--no-answer-cache", action="store_true",
                   help="compute every answer: neither answer from nor keep answers in the answer cache "
                        "(what `immich index` computed for Immich's previews; setting answer_cache_mb)")
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from immich_ml_desktop.server.answer_cache import open_answer_cache
    from immich_ml_desktop.server.ml_server import MlServer
    from immich_ml_desktop.models.runtime import default_parallel

    if args.verbose == 0:  # a service shows one line per request by default
        logging.getLogger("immich_ml_desktop").setLevel(logging.INFO)
    settings = settings_from_args(args)
    overrides: dict = {"parallel": args.workers or default_parallel()}
    if args.model_ttl is not None:
        overrides["model_ttl"] = args.model_ttl
    answers = None if args.no_answer_cache else open_answer_cache(settings.answer_cache_mb)
    with engine_from_args(args, **overrides) as engine:
        server = MlServer(
            engine,
            host=args.host or settings.server_host,
            port=settings.server_port if args.port is None else args.port,
            allow=settings.server_allow if args.allow is None else args.allow,
            forward_url=settings.forward_url if args.forward is None else args.forward,
            **({} if args.forward_timeout is None else {"forward_timeout": args.forward_timeout}),
            workers=engine.parallel,  # as many requests at once as the engine was built for
            answers=answers,
        )
        preload = settings.server_preload if args.preload is None else args.preload
        for model in server.preload(preload):
            logging.getLogger(__name__).info("Preloaded %s", model)
        if answers is not None:
            held = answers.stats()
            logging.getLogger(__name__).info("Answer cache %s: %d answers, %.0f of %.0f MB", answers.path, held.answers,
                                             held.bytes / 2**20, held.max_bytes / 2**20)
        try:
            server.serve_forever()
        finally:
            if answers is not None:
                answers.close()
    return 0

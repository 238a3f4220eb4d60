"""`devices`: the runtimes and devices found on this machine, and which one `auto` picks."""

from __future__ import annotations

import argparse

from immich_ml_desktop.cli.common import add_json_option, print_json
from immich_ml_desktop.models.runtime import discover_devices, native_low_precision, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list runtimes and devices, and which one auto picks")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    devices = discover_devices()
    auto = resolve_device("auto")
    fastest = {d.id: native_low_precision(d) for d in devices}
    if args.json:
        print_json({"devices": [{**d.as_dict(), "fastest_precision": fastest[d.id]} for d in devices], "auto": auto.id})
        return 0
    width = max(len(d.id) for d in devices)
    for d in devices:
        mark = "  <- auto" if d.id == auto.id else ""
        low = f" (computes fastest in {fastest[d.id]})" if fastest[d.id] != "f32" else ""
        print(f"{d.id:<{width}}  {d.description}{low}{mark}")
    return 0

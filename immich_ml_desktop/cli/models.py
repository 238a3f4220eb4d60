"""`models list|download|import|verify|export-clip`: Immich's model catalogue and the local model cache."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from immich_ml_desktop.cli.common import add_json_option, print_json, settings_from_args
from immich_ml_desktop.errors import InvalidInputError
from immich_ml_desktop.model_store import catalog
from immich_ml_desktop.model_store.store import DownloadProgress, ModelStore, PackReport

PARITY_MIN_COSINE = 0.9999


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download, import, verify and export models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        q = msub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("--cache-dir", type=Path, help="model cache in Immich's layout (default: from the settings)")
        return q

    q = add("list", "Immich's models with their dimensions, which are in the cache, and the model class serving each")
    q.add_argument("--task", help="only models of this task (clip, facial-recognition, ocr, or a model plugin's)")
    q.add_argument("--installed", action="store_true", help="only models present in a cache")
    q.add_argument("--classes", action="store_true",
                   help="list the model classes instead: the task/type and names each serves, and where it comes from")
    add_json_option(q)
    q.set_defaults(func=run_list)

    q = add("download", "download models from Hugging Face (immich-app/<name>, or the HF_ENDPOINT mirror)")
    q.add_argument("names", nargs="+", metavar="NAME", help="e.g. ViT-B-32__openai buffalo_l")
    q.set_defaults(func=run_download)

    q = add("import", "copy a downloaded model folder (or a whole Immich cache) into the model cache")
    q.add_argument("path", type=Path, help="a pack folder (config.json, visual/, textual/ or detection/, recognition/) or a cache")
    q.add_argument("--name", help="the model's name (default: the folder's name)")
    q.add_argument("--replace", action="store_true", help="overwrite a model of the same name")
    q.add_argument("--in-place", action="store_true", help="use an existing Immich cache where it is, read-only (saved in the settings)")
    q.set_defaults(func=run_import)

    q = add("verify", "check the cached models' files: complete, missing or damaged")
    q.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: every pack in the caches)")
    add_json_option(q)
    q.set_defaults(func=run_verify)

    q = add("export-clip", "export an open_clip model into Immich's layout (needs the `export` extra)")
    q.add_argument("arch", help="open_clip architecture, e.g. ViT-B-32")
    q.add_argument("--pretrained", help="open_clip pretrained tag, e.g. openai, laion2b_s34b_b79k")
    q.add_argument("--random-init", action="store_true", help="random weights (tests and benchmarks; nothing is downloaded)")
    q.add_argument("--name", help="the pack's name (default: ARCH__TAG)")
    q.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    q.add_argument("--dynamic-batch", action="store_true", help="export with a batch axis (Immich's exports have none)")
    q.add_argument("--replace", action="store_true", help="overwrite an existing pack of that name")
    q.add_argument("--no-parity", action="store_true", help="skip comparing the exported pack with PyTorch")
    add_json_option(q)
    q.set_defaults(func=run_export)


def _store(args: argparse.Namespace, only_given: bool = False) -> ModelStore:
    settings = settings_from_args(args)
    if only_given and args.cache_dir:
        return ModelStore(args.cache_dir)
    return ModelStore(settings.model_cache_dir, settings.extra_model_dirs)


def run_list(args: argparse.Namespace) -> int:
    from immich_ml_desktop.models import registry

    store = _store(args)
    for problem in registry.plugin_problems():
        print(f"warning: {problem}", file=sys.stderr)
    served = registry.served_tasks()
    tasks = {e.task.value for e in catalog.entries()} | {t for t, _ in served}
    if args.task and args.task not in tasks:
        raise InvalidInputError(f"No task {args.task!r} here: the tasks are {', '.join(sorted(tasks))}.")
    if args.classes:
        return _print_classes([c for c in registry.model_classes() if not args.task or c.task == args.task], args.json)
    rows = []
    for entry in catalog.entries(cache_dirs=store.caches):
        pack = entry.path if entry.custom else store.find_pack(entry.name)
        rows.append({**entry.as_dict(), "path": str(pack) if pack else None, "installed": pack is not None})
    rows += _other_rows(store.caches, served, {(r["task"], r["name"].casefold()) for r in rows})
    rows = [r for r in rows if (not args.task or r["task"] == args.task) and (r["installed"] or not args.installed)]
    for r in rows:
        r["classes"] = _classes_for(r["task"], r["name"], store.caches, served)
    if args.json:
        print_json(rows)
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        flags = ", ".join(x for x in ("multilingual" if r["multilingual"] else "", "custom" if r["custom"] else "") if x)
        where = r["path"] or "-"
        dim = f"{r['dim']:>5}-d" if r["dim"] is not None else f"{'-':>7}"
        classes = " ".join(f"{t}={c.rsplit(':', 1)[-1]}" for t, c in r["classes"].items()) or "-"
        print(f"{r['name']:<{width}}  {r['task']:<18}  {dim}  {flags:<20}  {classes:<52}  {where}")
    return 0


def _classes_for(task: str, name: str, caches: list[Path], served: list[tuple[str, str]]) -> dict[str, str]:
    """type -> the class (module:name) that serves this model of `task` (or why none can)."""
    from immich_ml_desktop.errors import UserError
    from immich_ml_desktop.models import registry

    found = {}
    for t, model_type in served:
        if t != task:
            continue
        try:
            cls = registry.model_class(task, model_type, name, caches)
        except UserError as e:  # two plugins claim it: say so on the row, list the rest
            found[model_type] = f"conflict: {e}"
            continue
        if cls is not None:
            found[model_type] = f"{cls.__module__}:{cls.__qualname__}"
    return found


def _other_rows(caches: list[Path], served: list[tuple[str, str]], listed: set[tuple[str, str]]) -> list[dict]:
    """Models the catalogue does not list: packs in the caches of the other served tasks (OCR, a plugin's
    task), and names model classes declare."""
    from immich_ml_desktop.models import registry

    names: dict[tuple[str, str], str] = {}
    for task in sorted({t for t, _ in served} - {t.value for t in catalog.REQUIRED_FILES}):
        for cache in caches:
            folder = Path(cache) / task
            if folder.is_dir():
                for pack in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    names.setdefault((task, pack.name.casefold()), pack.name)
    for info in registry.model_classes():
        for name in info.cls.model_names.names if info.cls.model_names is not None else ():
            names.setdefault((info.task, name.casefold()), name)
    rows = []
    for (task, folded), name in sorted(names.items()):
        if (task, folded) in listed:
            continue
        found = next((Path(c) / task / name for c in caches if (Path(c) / task / name).is_dir()), None)
        rows.append({
            "name": name, "task": task, "dim": None, "family": None, "multilingual": False, "custom": False,
            "path": str(found) if found else None, "installed": found is not None,
        })
    return rows


def _print_classes(classes: list, as_json: bool) -> int:
    if as_json:
        print_json([c.as_dict() for c in classes])
        return 0
    width = max((len(f"{c.task}/{c.type}") for c in classes), default=9)
    for c in classes:
        print(f"{c.task + '/' + c.type:<{width}}  {c.name}  serves {c.names}  ({c.source})")
    return 0


class _ProgressPrinter:
    """One line per file on a log; a live line on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.file: str | None = None

    def __call__(self, ev: DownloadProgress) -> None:
        mb = 1 / (1 << 20)
        if ev.status == "complete":
            if self.tty:
                sys.stderr.write("\r\033[K")
            return
        if ev.file != self.file:
            self.file = ev.file
            if not self.tty:
                print(f"{ev.model}: {ev.file} ({ev.file_total * mb:.1f} MB)", file=sys.stderr, flush=True)
        now = time.monotonic()
        if self.tty and (now - self.last > 0.2 or ev.file_done == ev.file_total):
            self.last = now
            sys.stderr.write(f"\r\033[K{ev.model}: {ev.file} {ev.done * mb:.1f}/{ev.total * mb:.1f} MB ({ev.fraction:.0%})")
            sys.stderr.flush()


def run_download(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in args.names:
        path = store.download(name, progress=_ProgressPrinter())
        print(f"{name}: {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.in_place:
        source = args.path.expanduser().resolve()
        reports = ModelStore(source).verify_all()
        if not reports:
            raise InvalidInputError(f"{source} holds no models in Immich's layout (<cache>/clip/<name>, <cache>/facial-recognition/<name>).")
        if str(source) not in settings.extra_model_dirs:
            settings.extra_model_dirs.append(str(source))
            settings.save()
        _print_reports(reports)
        print(f"using {source} in place (read-only)")
        return 0 if all(r.ok for r in reports) else 1
    store = ModelStore(settings.model_cache_dir)
    reports = store.import_folder(args.path, name=args.name, replace=args.replace)
    for r in reports:
        print(f"imported {r.task}/{r.name} into {r.path}")
    return 0


def _print_reports(reports: list[PackReport]) -> None:
    for r in reports:
        print(f"{r.status:<9} {r.task}/{r.name}  {r.path}")
        for problem in r.problems:
            print(f"          - {problem}")


def run_verify(args: argparse.Namespace) -> int:
    store = _store(args, only_given=True)
    reports = [store.verify(n) for n in args.names] if args.names else store.verify_all()
    if args.json:
        print_json([r.as_dict() for r in reports])
    elif reports:
        _print_reports(reports)
    else:
        print(f"no models in {', '.join(map(str, store.caches))}")
    return 0 if all(r.ok for r in reports) else 1


def run_export(args: argparse.Namespace) -> int:
    from immich_ml_desktop.model_store.export import export_clip

    settings = settings_from_args(args)
    result = export_clip(
        args.arch,
        args.pretrained,
        Path(settings.model_cache_dir),
        name=args.name,
        random_init=args.random_init,
        seed=args.seed,
        dynamic_batch=args.dynamic_batch,
        parity=not args.no_parity,
        replace=args.replace,
        say=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    if args.json:
        print_json(result.as_dict())
    else:
        print(f"exported {result.pack_dir} in {result.seconds:.1f} s")
        for rel, size in result.file_sizes.items():
            print(f"  {rel:<32} {size / (1 << 20):9.1f} MB")
        if result.parity:
            print(f"  parity with PyTorch: image cosine >= {result.parity['image_min_cosine']:.6f}, "
                  f"text cosine >= {result.parity['text_min_cosine']:.6f}")
    if result.parity and min(result.parity.values()) < PARITY_MIN_COSINE:
        print(f"error: the exported pack differs from PyTorch (cosine below {PARITY_MIN_COSINE})", file=sys.stderr)
        return 1
    return 0

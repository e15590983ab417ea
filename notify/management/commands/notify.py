"""``python manage.py notify <command>``: the service's command line.

trigger TYPE --payload JSON   store an event (like notify.trigger)
apikey create|list|revoke     manage HTTP API keys
worker                        run the in-process worker pool
scheduler                     run the scheduler (one leader among many)
run                           web + worker pool + scheduler (embedded default)
demo                          load demo data
bench                         run the benchmark workloads
export [--format yaml|json]   write rules, templates, categories and bindings to a file
import FILE [--dry-run] [--skip-invalid]
                              read them back, all or nothing (or all valid items)
ops-group                     create or reset the "ops" permission group
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from notify import conf
from notify.dev.demo import DemoRefused, demo_logins, demo_refusal, load_demo
from notify.intake.trigger import trigger
from notify.models import ApiKey
from notify.project.server import serve
from notify.runtime.heap import freeze_startup_heap
from notify.runtime.worker import WorkerPool
from notify.scheduling.scheduler import SchedulerService
from rules.ops import ensure_ops_group
from rules.portability import (
    NOTHING_VALID_EXIT_CODE,
    ImportRejected,
    dumps,
    export_document,
    import_document,
    loads,
)


class Command(BaseCommand):
    help = "notify: trigger events, manage API keys, run workers, the scheduler and benchmarks."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="command")
        trigger = sub.add_parser("trigger", help="store an event")
        trigger.add_argument("type", help="event type, e.g. order.shipped")
        trigger.add_argument("--payload", default="{}", help="the payload as a JSON object")
        trigger.add_argument("--actor", type=int, help="the acting user's id")
        trigger.add_argument(
            "--recipient", action="append", default=[], help="user id or email (repeatable)"
        )
        trigger.add_argument(
            "--idempotency-key", help="a retried trigger with this key stores nothing new"
        )

        apikey = sub.add_parser("apikey", help="manage API keys")
        apikey_sub = apikey.add_subparsers(dest="apikey_action", required=True, metavar="action")
        create = apikey_sub.add_parser("create", help="create a key; the token is shown once")
        create.add_argument("name")
        apikey_sub.add_parser("list", help="list keys")
        revoke = apikey_sub.add_parser("revoke", help="revoke a key")
        revoke.add_argument("name")

        worker = sub.add_parser("worker", help="run the in-process worker pool")
        worker.add_argument("--threads", type=int)

        scheduler = sub.add_parser("scheduler", help="run the scheduler")
        scheduler.add_argument(
            "--tick",
            type=float,
            help="seconds between runs of the due-work jobs (default NOTIFY['SCHEDULER_TICK'])",
        )
        scheduler.add_argument(
            "--standby-interval",
            type=float,
            help="seconds between a standby's tries for the leader lock "
            "(default NOTIFY['SCHEDULER_STANDBY_INTERVAL'])",
        )

        run = sub.add_parser("run", help="web + worker pool + scheduler in one process")
        run.add_argument("--host", default="127.0.0.1")
        run.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("PORT") or 8000),
            help="default: $PORT, else 8000; links in messages follow it unless NOTIFY_SITE_URL is set",
        )
        run.add_argument("--no-worker", action="store_true")
        run.add_argument("--no-scheduler", action="store_true")

        demo = sub.add_parser(
            "demo",
            help="load demo users, categories, rules and events (embedded default only)",
        )
        demo.add_argument(
            "--force",
            action="store_true",
            help="load them outside the embedded default too (any DATABASE_URL, real providers)",
        )
        demo.add_argument(
            "--if-embedded",
            action="store_true",
            help="outside the embedded default, say so and load nothing (exit 0): `make run`",
        )

        export = sub.add_parser("export", help="write the ops configuration to a file")
        export.add_argument("--format", choices=["yaml", "json"], default="yaml")
        export.add_argument("-o", "--output", help="the file (default: standard output)")

        import_ = sub.add_parser(
            "import",
            help="import an exported configuration: all or nothing, or --skip-invalid",
            description="Import categories, templates, rules and bindings, validated by the "
            "admin's forms. Without --skip-invalid any invalid item refuses the whole file: "
            "each one is named (section[index] 'key'.field: reason), nothing changes, exit "
            "code 1. With --skip-invalid the valid items are imported, each invalid one is "
            "printed as skipped with its reason, and the last line says 'imported N, skipped "
            f"M'; exit code 0, or {NOTHING_VALID_EXIT_CODE} if items were skipped and none could "
            "be imported. --dry-run validates and reports the same, and saves nothing.",
        )
        import_.add_argument("file", help="a YAML or JSON file from 'notify export' ('-': stdin)")
        import_.add_argument(
            "--dry-run", action="store_true", help="validate and report; change nothing"
        )
        import_.add_argument(
            "--skip-invalid",
            action="store_true",
            help="import the valid items and list each invalid one as skipped, with its "
            f"reason (exit code 0; {NOTHING_VALID_EXIT_CODE} if nothing valid was left to import)",
        )
        sub.add_parser("ops-group", help="create or reset the 'ops' permission group")

        try:
            import bench as bench_module  # bench/ sits outside the package: a source checkout only
        except ImportError:
            return
        bench_module.add_arguments(sub.add_parser("bench", help="run the benchmark workloads"))

    def handle(self, *args, **options):
        action = options["action"]
        return getattr(self, f"do_{action.replace('-', '_')}")(options)

    def do_trigger(self, options):
        try:
            payload = json.loads(options["payload"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--payload is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise CommandError("--payload must be a JSON object, e.g. '{\"order_id\": 1}'")
        recipients = [int(r) if r.isdigit() else r for r in options["recipient"]]
        try:
            event = trigger(
                options["type"],
                payload,
                actor=options.get("actor"),
                recipients=recipients,
                idempotency_key=options.get("idempotency_key"),
                source="cli",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"event {event.pk} stored ({event.type})")

    def do_apikey(self, options):
        action = options["apikey_action"]
        if action == "create":
            if ApiKey.objects.filter(name=options["name"]).exists():
                raise CommandError(f"an API key named '{options['name']}' exists already")
            key, token = ApiKey.issue(options["name"])
            self.stdout.write(
                f"API key '{key.name}' created. Token (shown once, keep it secret):\n{token}"
            )
        elif action == "list":
            for key in ApiKey.objects.order_by("name"):
                state = "revoked" if key.revoked_at else "active"
                self.stdout.write(
                    f"{key.name}\t{key.prefix}\t{state}\tlast used {key.last_used_at or '-'}"
                )
        elif action == "revoke":
            updated = ApiKey.objects.filter(name=options["name"], revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            )
            if not updated:
                raise CommandError(f"no active API key named '{options['name']}'")
            self.stdout.write(f"API key '{options['name']}' revoked")

    def do_worker(self, options):
        prepare_var_dir()  # links it renders are signed with the key `run` uses
        freeze_startup_heap()  # set up: out of the cyclic collector's scans
        pool = WorkerPool(threads=options.get("threads"))
        pool.start()
        self.stdout.write(f"worker pool running with {pool.size} threads; Ctrl-C to stop")
        _wait_for_signal()
        pool.stop()

    def do_scheduler(self, options):
        for name in ("tick", "standby_interval"):
            if options.get(name) is not None and options[name] <= 0:
                raise CommandError(f"--{name.replace('_', '-')} must be positive")
        prepare_var_dir()  # digests it sends are signed with the key `run` uses
        freeze_startup_heap()
        service = SchedulerService(
            tick=options.get("tick"), standby_interval=options.get("standby_interval")
        )
        service.start()
        self.stdout.write("scheduler running; Ctrl-C to stop")
        self.stdout.flush()
        _wait_for_signal()
        service.stop()
        self.stdout.write("scheduler stopped")

    def do_run(self, options):
        prepare_var_dir()
        follow_port(options["host"], options["port"])
        freeze_startup_heap()
        self.stdout.write(run_banner(f"http://{options['host']}:{options['port']}"))
        self.stdout.flush()
        serve(
            options["host"],
            options["port"],
            workers=not options["no_worker"],
            scheduler=not options["no_scheduler"],
        )

    def do_demo(self, options):
        refusal = demo_refusal()
        if refusal and options["if_embedded"] and not options["force"]:
            self.stdout.write(f"No demo data: {refusal}")
            return
        try:
            load_demo(self.stdout, force=options["force"])
        except DemoRefused as exc:
            raise CommandError(str(exc)) from exc

    def do_export(self, options):
        text = dumps(export_document(timezone.now()), options["format"])
        if options.get("output"):
            with open(options["output"], "w", encoding="utf-8") as handle:
                handle.write(text)
            self.stderr.write(f"configuration written to {options['output']}")
        else:
            self.stdout.write(text, ending="")

    def do_import(self, options):
        path = options["file"]
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(Path(path).suffix)
        try:
            report = import_document(
                loads(text, fmt),
                dry_run=options["dry_run"],
                skip_invalid=options["skip_invalid"],
            )
        except ImportRejected as exc:
            hint = ""
            if exc.invalid_items:
                hint = (
                    f"\n{len(exc.invalid_items)} invalid item(s): fix them, or import the "
                    "valid items with --skip-invalid"
                )
            raise CommandError(
                f"{path}: nothing was imported ({len(exc.problems)} problem(s)):\n  "
                + "\n  ".join(exc.problems)
                + hint
            ) from exc
        for problem in report.problems:
            self.stdout.write(f"skipped {problem}")
        self.stdout.write(report.summary())
        if report.skipped and not report.imported:
            raise CommandError(
                f"{path}: nothing could be imported: every item is invalid",
                returncode=NOTHING_VALID_EXIT_CODE,
            )

    def do_ops_group(self, options):
        group, missing = ensure_ops_group()
        self.stdout.write(f"group '{group.name}' has {group.permissions.count()} permissions")
        if missing:
            raise CommandError("missing permissions (run migrate first): " + ", ".join(missing))

    def do_bench(self, options):
        import bench  # bench/ sits outside the package: a source checkout only

        return_code = bench.main(options, self.stdout)
        if return_code:
            raise CommandError("benchmark failed")


def prepare_var_dir() -> None:
    """Make what the embedded default keeps on disk, before serving or sending:
    the static folder and, when no DJANGO_SECRET_KEY is set, a secret key in
    ``settings.SECRET_KEY_FILE`` that `run`, `worker` and `scheduler` all sign
    with (so sessions and links survive restarts). Settings only read these:
    importing them creates nothing. Projects without these settings are left
    alone."""
    if getattr(settings, "STATIC_ROOT", None):
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    key_file = getattr(settings, "SECRET_KEY_FILE", None)
    if key_file is None or not getattr(settings, "SECRET_KEY_IS_EPHEMERAL", False):
        return
    settings.SECRET_KEY = ensure_secret_key_file(Path(key_file))


def run_banner(base: str) -> str:
    """The one block `notify run` prints: where to go, and the demo logins."""
    lines = [
        f"notify is running on {base}/ (Ctrl-C to stop)",
        f"  home       {base}/",
        f"  inbox      {base}/inbox/",
        f"  settings   {base}/settings/notifications/",
        f"  admin      {base}/admin/  (dashboard: {base}/admin/notify/delivery/dashboard/)",
        f"  API        {base}/api/docs/  (OpenAPI: {base}/api/v1/openapi.json)",
    ]
    if conf.get("SANDBOX"):
        lines.append(f"  outbox     {base}/dev/outbox/  (sandbox: what would have been sent)")
    logins = demo_logins()
    if logins:
        lines.append(
            "  log in as  " + ", ".join(logins) + "  (passwords: printed by `notify demo`)"
        )
    return "\n".join(lines)


def follow_port(host: str, port: int) -> None:
    """Point the links in messages at the address this server answers on, when
    NOTIFY_SITE_URL is not configured: ``settings.NOTIFY["SITE_URL"]`` for this
    process, and ``NOTIFY_SITE_URL`` in the environment for any process it starts.
    A configured SITE_URL (a public address behind a proxy) is left alone."""
    if "SITE_URL" in getattr(settings, "NOTIFY", {}) or os.environ.get("NOTIFY_SITE_URL"):
        return
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 -- names a reachable address, binds nothing
    if ":" in shown:
        shown = f"[{shown}]"  # an IPv6 address in a URL
    site_url = f"http://{shown}:{port}"
    settings.NOTIFY = {**getattr(settings, "NOTIFY", {}), "SITE_URL": site_url}
    os.environ["NOTIFY_SITE_URL"] = site_url


def ensure_secret_key_file(path: Path) -> str:
    """The key in ``path``, written first (readable by its owner only) when missing.
    Written aside and linked into place, so a concurrent run reads a whole key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another run was first: use its key
        finally:
            draft.unlink()
    return path.read_text().strip()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()

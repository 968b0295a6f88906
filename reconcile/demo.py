"""`reconcile demo`: the whole product on this machine, with no account, key or server needed.

An embedded PostgreSQL (its data directory kept between runs, the `demo` database recreated on
each) stands in for your database, and the in-process Stripe emulator for Stripe. The demo
seeds a few hundred customers, mirrors them with a first sync, plants drift with SQL, then
walks through a dry run, the corrections, the e-mails, a clean dry run, and a failed renewal
arriving as a signed webhook at the real receiver. It reads no settings: the environment and
any .env file are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager

import structlog

from reconcile import demo_steps as steps
from reconcile.database import make_engine
from reconcile.demo_drift import failed_invoices_of, plant_drift
from reconcile.demo_world import (
    API_KEY,
    DATABASE,
    DEMO_DIR_ENV,
    DEMO_MIX,
    DemoContext,
    DemoError,
    DemoPaths,
    add_users,
    demo_dir,
    demo_directory,
    demo_settings,
    new_webhook_secret,
    postgres,
    require_embedded_postgres,
    reset_database,
)
from reconcile.emulator import StripeEmulator
from reconcile.errors import ReconcileError
from reconcile.logging import configure_logging
from reconcile.migrate import upgrade

log = structlog.get_logger("reconcile.demo")

DEFAULT_CUSTOMERS = 300
SEED = 20261204
STEPS = (
    "Step 1/5: dry run - what has drifted between your database and Stripe",
    "Step 2/5: run - the corrections, applied in one transaction",
    "Step 3/5: outbox - the failed-payment e-mails",
    "Step 4/5: dry run again - nothing left to correct",
    "Step 5/5: webhook - a renewal fails at Stripe and the receiver updates the row",
)
NEXT_HEADING = "Next: run it against your Stripe test account"
NEXT_STEPS = """\
  export STRIPE_API_KEY=sk_test_...      # Dashboard > Developers > API keys (test mode)
  export DATABASE_URL=postgresql://user:password@localhost:5432/app
  reconcile db upgrade                   # creates its tables (users only if absent)
  reconcile --dry-run                    # the drift report; writes nothing
  reconcile run                          # corrects it (a first sync of a big account: --force)

  # Webhooks: `stripe listen --forward-to 127.0.0.1:8000/api/v1/stripe-webhooks`
  # prints the whsec_ signing secret to use:
  export STRIPE_WEBHOOK_SECRET=whsec_...
  reconcile serve --port 8000

  # E-mails: to files first, then SendGrid (SENDGRID_API_KEY=SG...)
  export EMAIL_FROM=billing@yourdomain.com EMAIL_BACKEND=file
  reconcile notify"""

Out = Callable[[str], None]


def _fact(out: Out, label: str, text: str) -> None:
    """A labelled paragraph of the set-up summary, wrapped under its label."""
    out(steps.wrap(text, f"  {label:<12}", " " * 14))


def _heading(out: Out, title: str) -> None:
    out("")
    out(title)
    out("=" * len(title))


@contextmanager
def _step(out: Out, title: str, paths: DemoPaths) -> Iterator[None]:
    """Print the heading; turn any failure inside into a DemoError naming the step."""
    _heading(out, title)
    where = title.split(":")[0]
    try:
        yield
    except ReconcileError as exc:
        raise DemoError(f"{where}: {exc.message}", hint=exc.hint or f"see {paths.log}") from exc
    except Exception as exc:
        log.exception("demo.step_failed", step=where)
        raise DemoError(
            f"{where} failed: {type(exc).__name__}: {exc}", hint=f"details in {paths.log}"
        ) from exc


def run_demo(environ: Mapping[str, str], out: Out, *, customers: int = DEFAULT_CUSTOMERS) -> None:
    """The whole walkthrough; `environ` is consulted only for where the demo keeps its files.

    Raises DemoError (a ReconcileError, exit code 1) naming the step that failed.
    """
    started = time.perf_counter()
    paths = DemoPaths(demo_dir(environ))
    require_embedded_postgres()
    with demo_directory(paths), paths.log.open("w", encoding="utf-8") as log_stream:
        # The product's own log events go to a file; the terminal gets the story.
        configure_logging(level="INFO", fmt="json", stream=log_stream)
        try:
            _walkthrough(out, paths, customers)
        finally:
            configure_logging(level="WARNING")
    out("")
    out(steps.wrap(f"The walkthrough took {time.perf_counter() - started:.1f} s. Its files are "
                   f"in {paths.root} ({DEMO_DIR_ENV} moves them); `reconcile demo` again starts "
                   "over.", "", ""))


def _walkthrough(out: Out, paths: DemoPaths, customers: int) -> None:
    webhook_secret = new_webhook_secret()
    out("stripe-reconcile demo: an embedded PostgreSQL and a Stripe emulator, on this machine")
    with ExitStack() as stack:
        with _step(out, "Setting up", paths):
            clock = time.perf_counter()
            server, fresh, discarded = stack.enter_context(postgres(paths.pgdata))
            how = "initialised" if fresh else "reused"
            _fact(out, "PostgreSQL", f"{how} in {paths.pgdata} ({time.perf_counter() - clock:.1f}"
                  f" s){f'; an unusable one was removed ({discarded})' if discarded else ''}")
            db_url = reset_database(server.url)
            upgrade(db_url)
            emulator = stack.enter_context(StripeEmulator(api_key=API_KEY))
            seeded = emulator.seed(customers, rng_seed=SEED, mix=DEMO_MIX, freeze_gc=False)
            statuses = ", ".join(f"{n} {s}" for s, n in sorted(seeded.by_status.items()))
            _fact(out, "Stripe", f"an emulator at {emulator.url} with {seeded.customers} "
                  f"customers and {seeded.invoices} invoices; subscriptions: {statuses}")
            settings = demo_settings(db_url, emulator.url, paths, webhook_secret)
            engine = make_engine(db_url)
            stack.callback(engine.dispose)
            with_user, without = add_users(engine, emulator)
            ctx = DemoContext(out, paths, settings, engine, emulator)
            first = steps.previous_sync(ctx)
            planted = plant_drift(engine)
            revealed = failed_invoices_of(engine, planted["status"])
            _fact(out, "Database", f'"{DATABASE}" recreated and migrated; {with_user} users '
                  f"({without} customers have none); a first sync wrote "
                  f"{first.applied.total} rows. Then SQL planted what missed webhooks and bugs "
                  f"leave behind: {sum(len(ids) for ids in planted.values())} rows, "
                  f"{len(planted)} kinds of drift.")
        with _step(out, STEPS[0], paths):
            found = steps.dry_run(ctx)
            if found.changed_rows == 0:
                raise DemoError("the dry run found no drift after drift was planted")
        with _step(out, STEPS[1], paths):
            steps.correct(ctx)
        with _step(out, STEPS[2], paths):
            steps.outbox(ctx, revealed)
        with _step(out, STEPS[3], paths):
            clean = steps.dry_run(ctx, rows=3)
            if clean.changed_rows:
                raise DemoError(f"the second dry run would still change {clean.changed_rows} rows")
            if clean.drift_total:
                steps.say(ctx, "What remains are reports, not changes: Stripe customers without "
                               "a local user. Reconcile links them once such a user exists; it "
                               "never invents users.")
        with _step(out, STEPS[4], paths):
            steps.webhook(ctx, webhook_secret)
    _heading(out, NEXT_HEADING)
    out(NEXT_STEPS)

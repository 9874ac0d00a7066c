"""The `mybot` command: run the daemon, apply migrations, check the config, replay a tick file, review logs,
and read the Dhan access token's expiry (`mybot dhan token`)."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

import orjson

from config.settings import ConfigError, Settings, load_settings, secret_values, settings_summary
from telemetry.logs import configure_logging, get_logger, redact

__all__ = ["main", "tune_interpreter"]

EXIT_CONFIG = 2

DESCRIPTION = """\
mybot: a trading runtime for NSE index options through Dhan.

One daemon, two roles: the Market Data Service (role mds: feed -> 1-minute candles -> PostgreSQL/SQLite,
Redis, HTTP on :8002) and the trading runtime (role trader: strategy -> risk guard -> executor ->
broker, control API on :8000). Role all runs both in one process.

Configuration: defaults < TOML file (--config) < environment (MYBOT_SECTION_KEY, plus the seed's
MARKET_DATA_PROVIDER, MDS_BASE_URL, FEED_POLL_SECONDS) < secret files in secrets_dir
(dhan_client_id.txt, dhan_access_token.txt, control_token.txt, postgres_password.txt,
redis_password.txt). `mybot config check` prints the effective configuration with secrets masked.
"""


def _settings(args: argparse.Namespace, overrides: dict[str, dict[str, object]] | None = None) -> Settings:
    settings = load_settings(args.config, overrides=overrides)
    redact(*secret_values(settings))  # before anything can log: the secrets and the URLs' passwords
    return settings


def tune_interpreter(settings: Settings) -> None:
    """Process-wide interpreter settings for a long-running daemon (called once the start-up objects exist).

    Start-up objects live for the whole run: keep them out of every future GC scan, and collect young
    objects less often (ticks are short-lived; the default threshold of 700 rescans far too often at
    hundreds of thousands of ticks per second). Thread switch interval, measured at 1M ticks through 200
    candle actors: 5 ms (CPython's default) 82k ticks/s, 20 ms 123k, 50 ms 152k; threads that block (most of
    ours) hand the GIL over at once regardless."""
    gc.collect()  # freeze what lives, not garbage
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    sys.setswitchinterval(settings.supervision.gil_switch_interval_ms / 1000)


def _cmd_run(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, object]] = {}
    settings = _settings(args, overrides)
    configure_logging(settings.log.level, settings.log.file, settings.log.file_max_bytes,
                      settings.log.file_backups, stdout=settings.log.stdout)
    from daemon.runtime import Runtime

    record = args.record or settings.feed.record_path
    runtime = Runtime(settings, args.role, record_path=record, install_signals=True)
    try:
        runtime.start()
    except Exception as exc:
        get_logger("mybot.runtime").event("RUNTIME_START_FAILED", f"{type(exc).__name__}: {exc}",
                                          level=50, exc_info=exc)
        runtime.shutdown()
        return 1
    tune_interpreter(settings)
    return runtime.wait()


def _cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log.level)
    from storage.errors import StorageError
    from storage.opening import open_storage

    storage = open_storage(settings.storage.url, connect_timeout=settings.storage.connect_timeout_seconds,
                           password=settings.storage_password.reveal())
    try:
        applied = storage.migrate()
    except StorageError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    print(f"migrations applied: {applied!r}")
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sys.stdout.write(orjson.dumps(settings_summary(settings), option=orjson.OPT_INDENT_2).decode() + "\n")
    print("config OK", file=sys.stderr)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log.level if args.verbose else "WARNING")
    from actors.sources.replay import ReplayFileUnreadable
    from daemon.replay import run_replay

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols is not None else None
    try:
        summary = run_replay(settings, args.ticks, args.out, symbols=symbols, chains_path=args.chains)
    except (ReplayFileUnreadable, ValueError) as exc:
        print(f"mybot replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _cmd_dhan_token(args: argparse.Namespace) -> int:
    """Print what the configured Dhan access token says about itself: its expiry (read, never verified)."""
    import time

    from core.market import to_iso_ist
    from core.token import TokenError, read_claims

    settings = _settings(args)
    token = settings.dhan.access_token.reveal()
    if not token:
        print("mybot dhan token: no access token configured (dhan_access_token.txt in secrets_dir, or "
              "MYBOT_DHAN_ACCESS_TOKEN)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        claims = read_claims(token)
    except TokenError as exc:
        print(f"mybot dhan token: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    left = claims.seconds_left(time.time())
    configured = settings.dhan.client_id.reveal()
    report = {
        "expires_at": to_iso_ist(claims.expires_at),
        "issued_at": to_iso_ist(claims.issued_at) if claims.issued_at is not None else None,
        "seconds_left": round(left),
        "expired": left <= 0,
        "client_id_matches": (claims.client_id == configured) if claims.client_id and configured else None,
        "auto_renew_token": settings.dhan.auto_renew_token,
        "totp_login": bool(settings.dhan.totp_secret_file and settings.dhan.pin_file),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        hours, rest = divmod(abs(int(left)), 3600)
        span = f"{hours} h {rest // 60:02d} min"
        state = f"EXPIRED {span} ago" if left <= 0 else f"valid for {span}"
        print(f"Dhan access token expires at {report['expires_at']} ({state})")
        if report["client_id_matches"] is False:
            print("warning: the token belongs to another client id than dhan_client_id.txt", file=sys.stderr)
    return 1 if left <= 0 else 0


def _cmd_review(args: argparse.Namespace) -> int:
    import os

    from review import LogSourceError, render_html, render_text, review

    if args.html:
        folder = os.path.dirname(os.path.abspath(args.html))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            print(f"mybot review: --html: cannot write into {folder}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        result = review(args.logs, day=args.day, since=args.since, until=args.until, pos_id=args.pos_id)
    except (LogSourceError, ValueError) as exc:
        print(f"mybot review: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.pos_id and not result.trades:
        print(f"mybot review: no trade {args.pos_id!r} in these lines", file=sys.stderr)
    if args.html:
        partial = f"{args.html}.partial"
        try:
            with open(partial, "w", encoding="utf-8") as handle:
                handle.write(render_html(result))
            os.replace(partial, args.html)
        except OSError as exc:
            print(f"mybot review: --html: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"mybot review: wrote {args.html}", file=sys.stderr)
    try:
        if args.json:
            sys.stdout.write(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            sys.stdout.write(render_text(result))
        sys.stdout.flush()
    except BrokenPipeError:  # `mybot review ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


REVIEW_DESCRIPTION = """\
Read the daemon's JSON-lines logs back: the day at a glance (trades, net P&L, win rate, max drawdown,
entries denied by reason, incidents by kind), every incident with its start, end, duration and what it
affected, and each trade's story from the signal to the P&L with the latency between steps.

LOG files are merged by time (several processes); a log's rotations (LOG.1, LOG.2.gz, ...) are read
with it, oldest first; "-" reads stdin. Lines that are not JSON log lines (SDK prints, a line cut by a
kill -9) are counted and shown, never fatal. Times are IST. Exit 0; 2 for an unreadable LOG or a bad
option.

examples:
  mybot review var/mybot.log --day 2026-11-20
  mybot review mds.log trader.log --day 2026-11-20 --since 10:55 --until 11:30
  mybot review var/mybot.log --pos-id NIFTY-2611201230-1
  mybot review var/mybot.log --day 2026-11-20 --json > review.json
  mybot review var/mybot.log --day 2026-11-20 --html review.html
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mybot", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="TOML configuration file")
        return p

    run = with_config(sub.add_parser(
        "run", help="run the daemon (Ctrl-C / SIGTERM stop it cleanly)",
        description="Run the daemon. Exit 0 on SIGTERM/Ctrl-C, 1 when the supervision tree gives up "
                    "(supervisord restarts it), 2 on a bad configuration."))
    run.add_argument("--role", choices=("all", "mds", "trader"), default="all",
                     help="all: both servers in one process (default); mds: Server A; trader: Server B")
    run.add_argument("--record", metavar="FILE", help="also write every received tick to FILE (replay format)")
    run.set_defaults(func=_cmd_run)

    migrate = with_config(sub.add_parser("migrate", help="apply the database migrations and exit"))
    migrate.set_defaults(func=_cmd_migrate)

    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = with_config(config_sub.add_parser(
        "check", help="validate and print the effective configuration (secrets masked)"))
    check.set_defaults(func=_cmd_config_check)

    replay = with_config(sub.add_parser(
        "replay", help="backtest: replay a tick file through the same actors on a virtual clock",
        description="Run the MDS and trader actors over TICKS.csv (ts,symbol,ltp,volume) on a virtual clock "
                    "with the paper broker; write signals, trades, a summary (gross, charges, net) and the "
                    "timing to --out, and the run's log (replay.log, stamped with the virtual time: `mybot "
                    "review DIR/replay.log`). Exit 2 for an unreadable file or bad --symbols."))
    replay.add_argument("ticks", metavar="TICKS.csv")
    replay.add_argument("--out", metavar="DIR", default="var/replay", help="output directory (default var/replay)")
    replay.add_argument("--symbols", metavar="LIST", help="replay only these (comma-separated; default: every "
                                                          "NIFTY, BANKNIFTY, FINNIFTY and SEC_<id> in the file)")
    replay.add_argument("--chains", metavar="FILE", help="recorded option chains (default: the file `run --record` "
                                                         "wrote beside the ticks: day.csv -> day.chains.jsonl)")
    replay.add_argument("--verbose", action="store_true",
                        help="also log to stdout at the configured level (default: warnings; replay.log is INFO)")
    replay.set_defaults(func=_cmd_replay)

    dhan = sub.add_parser("dhan", help="Dhan account commands")
    dhan_sub = dhan.add_subparsers(dest="dhan_command", required=True, metavar="SUBCOMMAND")
    token = with_config(dhan_sub.add_parser(
        "token", help="print when the configured access token expires (exit 1 once it has)",
        description="Read the configured Dhan access token (a JWT; its signature is not checked) and print "
                    "its expiry. Exit 0 while valid, 1 once expired, 2 when there is no readable token."))
    token.add_argument("--json", action="store_true", help="print JSON")
    token.set_defaults(func=_cmd_dhan_token)

    review = sub.add_parser("review", help="incident review: read the JSON logs back (text, --json, --html)",
                            description=REVIEW_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    review.add_argument("logs", metavar="LOG", nargs="+", help="log file(s); '-' = stdin")
    review.add_argument("--day", metavar="YYYY-MM-DD", help="only this IST day")
    review.add_argument("--since", metavar="T", help="from T: ISO-8601 (naive = IST) or HH:MM[:SS] on --day")
    review.add_argument("--until", metavar="T", help="up to T (excluded): ISO-8601 or HH:MM[:SS] on --day")
    review.add_argument("--pos-id", metavar="ID", help="only this trade and the incidents that affected it")
    review.add_argument("--json", action="store_true", help="print the review as JSON (schema mybot.review/1)")
    review.add_argument("--html", metavar="OUT", help="also write one self-contained HTML file (charts, offline)")
    review.set_defaults(func=_cmd_review)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mybot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

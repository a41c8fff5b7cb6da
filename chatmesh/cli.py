"""The `chatmesh` command: `up` starts the whole mesh on this machine, `token` signs a dev JWT,
`keygen` makes the services' identity keys, `serve NAME` runs one service (the container image's entrypoint), `migrate` applies the schema
migrations (the Kubernetes migration Job) and `bench` measures the mesh (docs/performance.md)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import runpy
import secrets
import signal
import sys
from pathlib import Path

from chatmesh import db, deadletter
from chatmesh.auth import sign
from chatmesh.bench.args import add_arguments as add_bench_arguments
from chatmesh.config import DEFAULT_PORTS, Settings
from chatmesh.embedded import EmbeddedPostgres, EmbeddedRedis
from chatmesh.launcher import SERVICES, Mesh
from chatmesh.redis_conn import Keys, open_redis
from chatmesh.service_keys import ensure_keyring

# The services that own a PostgreSQL schema, in the order their migrations are applied.
MIGRATED = ("conversation", "message")


def _data_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("CHAT_DATA_DIR") or ".chatmesh").resolve()


def jwt_secret(data_dir: Path) -> str:
    """CHAT_JWT_SECRET, or a development secret kept in the data folder (made on first use)."""
    if secret := os.environ.get("CHAT_JWT_SECRET"):
        return secret
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def up(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # A development mesh: the page's sign-in may sign tokens for any name (CHAT_DEV_LOGIN=0 to refuse).
    env = {"CHAT_JWT_SECRET": jwt_secret(data_dir), "CHAT_DEV_LOGIN": os.environ.get("CHAT_DEV_LOGIN", "1"),
           "CHAT_ATTACHMENT_DIR": os.environ.get("CHAT_ATTACHMENT_DIR") or str(data_dir / "attachments")}
    embedded: list[EmbeddedPostgres | EmbeddedRedis] = []
    mesh: Mesh | None = None
    # Stop cleanly on SIGTERM as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        env["CHAT_DATABASE_URL"] = os.environ.get("CHAT_DATABASE_URL", "")
        if not env["CHAT_DATABASE_URL"]:
            pg = EmbeddedPostgres(data_dir / "postgres", args.pg_port)
            embedded.append(pg)
            print(f"starting embedded PostgreSQL on 127.0.0.1:{args.pg_port} (data in {pg.data_dir})", flush=True)
            env["CHAT_DATABASE_URL"] = pg.start()
        env["CHAT_REDIS_URL"] = os.environ.get("CHAT_REDIS_URL", "")
        if not env["CHAT_REDIS_URL"]:
            rd = EmbeddedRedis(data_dir / "redis", args.redis_port)
            embedded.append(rd)
            print(f"starting embedded Redis on 127.0.0.1:{args.redis_port} (data in {rd.data_dir})", flush=True)
            env["CHAT_REDIS_URL"] = rd.start()
        ports = {name: getattr(args, f"{name}_port") for name in ("conversation", "message", "presence", "edge")}
        mesh = Mesh(env=env, ports=ports, log_dir=data_dir / "logs")
        print("starting conversation, message, presence and edge ...", flush=True)
        mesh.start()
        print(f"\nchatmesh is up: {mesh.edge_url}  (WebSocket: ws://127.0.0.1:{ports['edge']}/ws)")
        print(f"chat in a browser: {mesh.edge_url}/  (sign in with any user name)")
        print(f"logs in {mesh.log_dir}; a token: chatmesh token alice --data-dir {data_dir}")
        print("Ctrl-C stops everything.", flush=True)
        crashed = mesh.wait()
        if crashed:
            print(f"{crashed} exited unexpectedly; see {mesh.log_dir / (crashed + '.log')}", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if mesh:
            mesh.stop()
        for server in reversed(embedded):
            server.stop()


def token(args: argparse.Namespace) -> int:
    os.environ.setdefault("CHAT_JWT_SECRET", jwt_secret(_data_dir(args.data_dir)))
    settings = Settings.from_env()
    print(sign(settings, args.user_id, ttl_s=args.ttl, name=args.name))
    return 0


def keygen(args: argparse.Namespace) -> int:
    """Make an Ed25519 key pair per service for production: each private key goes into its own
    Secret (the pod of that service alone mounts it), the public ones into one ConfigMap."""
    folder = ensure_keyring(Path(args.folder).resolve(), SERVICES)
    print(f"private keys: {', '.join(str(folder / f'{name}.key') for name in SERVICES)}")
    print(f"public keys:  {folder / 'public'}/")
    print("see docs/security.md for the Secrets and the ConfigMap to make of them")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run one service in this process, exactly as `python -m services.<name>` does."""
    runpy.run_module(f"services.{args.service}", run_name="__main__", alter_sys=True)
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations of every schema-owning service to CHAT_DATABASE_URL."""
    settings = Settings.from_env({"CHAT_JWT_SECRET": "-", **os.environ})  # migrations sign nothing
    settings.require("database_url")
    for name in MIGRATED:
        schema = importlib.import_module(f"services.{name}.store").SCHEMA
        package = importlib.import_module(f"services.{name}")
        folder = Path(next(iter(package.__path__))) / "migrations"
        applied = asyncio.run(db.migrate(settings.database_url, schema, folder))
        print(f"{schema}: {len(applied)} migration(s) applied" + (f" ({', '.join(applied)})" if applied else ""),
              flush=True)
    return 0


def dead_letter(args: argparse.Namespace) -> int:
    """List or replay the events delivery gave up on (CHAT_REDIS_URL, CHAT_REDIS_PREFIX)."""
    settings = Settings.from_env({"CHAT_JWT_SECRET": "-", **os.environ})  # signs nothing
    settings.require("redis_url")

    async def run() -> int:
        client = open_redis(settings.redis_url)
        keys = Keys(settings.redis_prefix)
        try:
            if args.action == "replay":
                print(f"replayed {await deadletter.replay(client, keys)} event(s)")
            else:
                for dead_id, entry_id, reason in await deadletter.list_entries(client, keys):
                    print(f"{dead_id}  entry {entry_id}  {reason}")
        finally:
            await client.aclose()
        return 0

    return asyncio.run(run())


def bench(args: argparse.Namespace) -> int:
    """Measure connections, throughput, history and the storage ceiling (needs the `bench` extra)."""
    from chatmesh.bench.runner import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatmesh", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_up = commands.add_parser("up", help="start the whole mesh (embedded PostgreSQL and Redis unless URLs are set)")
    p_up.add_argument("--data-dir", help="where data and logs live (default $CHAT_DATA_DIR or ./.chatmesh)")
    for name, port in DEFAULT_PORTS.items():
        dest = "pg" if name == "postgres" else name
        p_up.add_argument(f"--{dest}-port", type=int, default=port, help=f"default {port}")
    p_up.set_defaults(func=up)

    p_token = commands.add_parser("token", help="print a development JWT for a user of the mesh in --data-dir")
    p_token.add_argument("user_id")
    p_token.add_argument("--data-dir")
    p_token.add_argument("--name", help="display name claim")
    p_token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires (default a day)")
    p_token.set_defaults(func=token)

    p_keygen = commands.add_parser("keygen", help="make an Ed25519 service key pair per service in FOLDER "
                                                  "(only those missing): FOLDER/<service>.key, FOLDER/public/")
    p_keygen.add_argument("folder")
    p_keygen.set_defaults(func=keygen)

    p_serve = commands.add_parser("serve", help="run one service in the foreground (configured by CHAT_* variables)")
    p_serve.add_argument("service", choices=SERVICES)
    p_serve.set_defaults(func=serve)

    p_migrate = commands.add_parser("migrate", help="apply the conversation and message schema migrations "
                                                    "to CHAT_DATABASE_URL, then exit")
    p_migrate.set_defaults(func=migrate)

    p_dead = commands.add_parser("dead-letter", help="list or replay events that delivery gave up on")
    p_dead.add_argument("action", choices=["list", "replay"])
    p_dead.set_defaults(func=dead_letter)

    p_bench = commands.add_parser("bench", help="measure the mesh: connections, throughput, history, ceiling "
                                                "(pip install 'chatmesh[bench]')")
    add_bench_arguments(p_bench)
    p_bench.set_defaults(func=bench)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

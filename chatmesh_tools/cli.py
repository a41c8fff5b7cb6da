"""The `chatmesh` command: `up` starts the whole mesh on this machine, `token` signs a dev JWT,
`keygen` makes the services' identity keys, `serve NAME` runs one service (the container image's
entrypoint), `migrate` applies the schema migrations (the Kubernetes migration Job), `status` and
`dead-letter` look at a running mesh, `push-worker` POSTs its push notifications to a webhook and
`bench` measures the mesh (docs/performance.md). Every command takes --data-dir with the same default,
and reads the running mesh's settings from it (chatmesh_tools/meshdir.py); CHAT_* variables set in the
shell win over the folder."""

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

import psycopg
import redis

from chatmesh import db, eventloop, logs
from chatmesh.auth import ServiceCredentials, sign
from chatmesh.config import DEFAULT_PORTS, ConfigError, Settings
from chatmesh.redis_conn import Keys, open_redis
from chatmesh.service_keys import ensure_keyring, keyring_env
from chatmesh.tls import client_tls
from chatmesh_tools import deadletter, meshdir
from chatmesh_tools import status as mesh_status
from chatmesh_tools.bench.args import add_arguments as add_bench_arguments
from chatmesh_tools.embedded import EmbeddedPostgres, EmbeddedRedis
from chatmesh_tools.launcher import IDENTITIES, SERVICES, Mesh

DATA_DIR_HELP = "the mesh's data folder (default $CHAT_DATA_DIR or ./.chatmesh), as `chatmesh up` uses it"

# The services that own a PostgreSQL schema, in the order their migrations are applied.
MIGRATED = ("conversation", "message")


_data_dir = meshdir.data_dir


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
    env = {
        "CHAT_JWT_SECRET": jwt_secret(data_dir),
        "CHAT_DEV_LOGIN": os.environ.get("CHAT_DEV_LOGIN", "1"),
        "CHAT_ATTACHMENT_DIR": os.environ.get("CHAT_ATTACHMENT_DIR") or str(data_dir / "attachments"),
    }
    try:
        metrics_base = int(os.environ.get("CHAT_METRICS_PORT") or 0) or None
    except ValueError:
        raise ConfigError(f"CHAT_METRICS_PORT={os.environ['CHAT_METRICS_PORT']!r} is not a port number") from None
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
        mesh = Mesh(env=env, ports=ports, log_dir=data_dir / "logs", metrics_base=metrics_base)
        print("starting conversation, message, presence and edge ...", flush=True)
        mesh.start()
        meshdir.write(
            data_dir,
            meshdir.MeshInfo(
                database_url=env["CHAT_DATABASE_URL"],
                redis_url=env["CHAT_REDIS_URL"],
                redis_prefix=os.environ.get("CHAT_REDIS_PREFIX") or "chat",
                ports=ports,
                metrics_ports=mesh.service_metrics_ports,
                keyring=str(mesh.keyring),
                pid=os.getpid(),
            ),
        )
        print(f"\nchatmesh is up: {mesh.edge_url}  (WebSocket: ws://127.0.0.1:{ports['edge']}/ws)")
        for name, port in mesh.service_metrics_ports.items():
            print(f"{name} metrics: http://127.0.0.1:{port}/metrics")
        print(f"chat in a browser: {mesh.edge_url}/  (sign in with any user name)")
        print(f"logs in {mesh.log_dir}; a token: chatmesh token alice --data-dir {data_dir}")
        print(f"health and backlog: chatmesh status --data-dir {data_dir}")
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
        meshdir.remove(data_dir, os.getpid())  # its URLs and ports die with it
        if mesh:
            mesh.stop()
        for server in reversed(embedded):
            server.stop()


def token(args: argparse.Namespace) -> int:
    """A user token signed with the mesh's secret, or with --service a service token signed with that
    service's key from the mesh's keyring; never a new secret, which no running mesh would accept."""
    data_dir = _data_dir(args.data_dir)
    if (args.user_id is None) == (args.service is None):
        raise meshdir.NoMesh("name a user (chatmesh token alice) or a service (chatmesh token --service edge)")
    if args.service:
        folder = meshdir.keyring(data_dir)
        if not (folder / f"{args.service}.key").exists():
            raise meshdir.NoMesh(
                f"{folder} holds no key of the service {args.service!r}: is {data_dir} the folder of `chatmesh up`?"
            )
        settings = Settings.from_env({"CHAT_JWT_SECRET": "-", **keyring_env(folder, args.service)})
        print(ServiceCredentials(settings, args.service).token())
        return 0
    env = dict(os.environ)
    if not env.get("CHAT_JWT_SECRET"):
        env["CHAT_JWT_SECRET"] = meshdir.existing_secret(data_dir)
    print(sign(Settings.from_env(env), args.user_id, ttl_s=args.ttl, name=args.name))
    return 0


def keygen(args: argparse.Namespace) -> int:
    """Make an Ed25519 key pair per service for production: each private key goes into its own
    Secret (the pod of that service alone mounts it), the public ones into one ConfigMap."""
    folder = ensure_keyring(
        Path(args.folder).resolve() if args.folder else _data_dir(args.data_dir) / meshdir.KEYRING_DIR, IDENTITIES
    )
    print(f"private keys: {', '.join(str(folder / f'{name}.key') for name in IDENTITIES)}")
    print(f"public keys:  {folder / 'public'}/")
    print("see docs/security.md for the Secrets and the ConfigMap to make of them")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run one service in this process, exactly as `python -m services.<name>` does. With --data-dir, what
    the shell leaves unset comes from the mesh `up` runs there (its servers, secret, keys and services),
    so a service started by hand joins that mesh, e.g. a second message replica on another port."""
    if args.data_dir is not None:
        os.environ.update(meshdir.service_env(_data_dir(args.data_dir), args.service))
    runpy.run_module(f"services.{args.service}", run_name="__main__", alter_sys=True)
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations of every schema-owning service to CHAT_DATABASE_URL."""
    settings = _tool_settings(args, "database_url")
    for name in MIGRATED:
        store = importlib.import_module(f"services.{name}.store")
        schema = store.SCHEMA
        package = importlib.import_module(f"services.{name}")
        folder = Path(next(iter(package.__path__))) / "migrations"
        applied = asyncio.run(db.migrate(settings.database_url, schema, folder, shared_ddl=store.SHARED_DDL))
        print(
            f"{schema}: {len(applied)} migration(s) applied" + (f" ({', '.join(applied)})" if applied else ""),
            flush=True,
        )
    return 0


def dead_letter(args: argparse.Namespace) -> int:
    """List or replay the events delivery gave up on (CHAT_REDIS_URL, CHAT_REDIS_PREFIX)."""
    settings = _tool_settings(args, "redis_url")

    async def run() -> int:
        client = open_redis(settings.redis_url)
        keys = Keys(settings.redis_prefix, settings.fanout_partitions)
        streams = deadletter.NOTIFICATIONS if args.notifications else deadletter.EVENTS
        try:
            if args.action == "replay":
                print(f"replayed {await deadletter.replay(client, keys, streams)} {streams.what}(s)")
            else:
                for dead_id, entry_id, reason in await deadletter.list_entries(client, keys, streams):
                    print(f"{dead_id}  entry {entry_id}  {reason}")
        finally:
            await client.aclose()
        return 0

    return asyncio.run(run())


def push_worker(args: argparse.Namespace) -> int:
    """Run the reference push worker until SIGINT/SIGTERM (chatmesh_tools/push_worker.py)."""
    from chatmesh_tools import push_worker as worker

    env = dict(os.environ)
    if args.data_dir is not None or meshdir.read(_data_dir(None)) is not None:
        env = {**meshdir.service_env(_data_dir(args.data_dir), "push"), **env}
    env.pop("CHAT_SERVICE_PUBLIC_KEYS", None)  # the worker answers no calls
    env.setdefault("CHAT_JWT_SECRET", "-")  # and verifies no user token
    settings = Settings.from_env(env)
    options = worker.WorkerOptions.of(
        settings,
        args.webhook,
        group=args.group,
        consumer=args.consumer,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
    )
    logs.setup("push-worker", settings.log_level)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await worker.main(settings, options, stopping)

    eventloop.run(run())
    return 0


def _tool_settings(args: argparse.Namespace, needs: str) -> Settings:
    """The settings of a tool run against a mesh: the shell's CHAT_* variables, the running mesh's
    (mesh.json) for the rest; it signs nothing, so no secret is needed."""
    data_dir = _data_dir(args.data_dir)
    settings = Settings.from_env({"CHAT_JWT_SECRET": "-", **meshdir.tool_env(data_dir)})
    if not getattr(settings, needs):
        variable = f"CHAT_{needs.upper()}"
        raise meshdir.NoMesh(
            f"{variable} is not set and no mesh runs in {data_dir} "
            f"(start `chatmesh up`, pass the --data-dir it uses, or set {variable})"
        )
    return settings


def status(args: argparse.Namespace) -> int:
    """Each service's health, the outbox backlog, fan-out pending and dead letters; exit 1 unless all serve."""
    data_dir = _data_dir(args.data_dir)
    info = meshdir.read(data_dir)
    if info is None:
        raise meshdir.NoMesh(
            f"no mesh runs in {data_dir} (`chatmesh up` writes {meshdir.MESH_FILE} there while "
            "it runs; pass the --data-dir it uses)"
        )
    settings = _tool_settings(args, "redis_url")
    report = mesh_status.gather(
        info,
        settings.database_url,
        settings.redis_url,
        settings.redis_prefix,
        client_tls(settings),
        settings.fanout_partitions,
    )
    print(f"mesh in {data_dir} (chatmesh up, pid {info.pid})")
    print(mesh_status.render(info, report))
    return 0 if report.healthy else 1


def bench(args: argparse.Namespace) -> int:
    """Measure connections, throughput, history and the storage ceiling (needs the `bench` extra)."""
    if args.data_dir is not None or args.url:  # measuring a running mesh: take what its folder knows
        data_dir = _data_dir(args.data_dir)
        info = meshdir.read(data_dir)
        if args.data_dir is not None and info is None:
            raise meshdir.NoMesh(f"no mesh runs in {data_dir}; leave out --data-dir to bench a mesh of its own")
        if info is not None:
            args.url = args.url or f"http://127.0.0.1:{info.ports['edge']}"
            args.database_url = args.database_url or info.database_url
            args.redis_url = args.redis_url or info.redis_url
        if not (args.jwt_secret or os.environ.get("CHAT_JWT_SECRET")) and meshdir.has_mesh(data_dir):
            args.jwt_secret = meshdir.existing_secret(data_dir)
    from chatmesh_tools.bench.runner import run  # the `bench` extra's imports, only when benching

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatmesh", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p_up = commands.add_parser("up", help="start the whole mesh (embedded PostgreSQL and Redis unless URLs are set)")
    p_up.add_argument("--data-dir", help=DATA_DIR_HELP)
    for name, port in DEFAULT_PORTS.items():
        dest = "pg" if name == "postgres" else name
        p_up.add_argument(f"--{dest}-port", type=int, default=port, help=f"default {port}")
    p_up.set_defaults(func=up)

    p_token = commands.add_parser(
        "token",
        help="print a development JWT for a user of the mesh in --data-dir, "
        "or with --service a service token for an internal caller",
    )
    p_token.add_argument("user_id", nargs="?")
    p_token.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_token.add_argument(
        "--service",
        choices=IDENTITIES,
        help="sign as this service with its key from the mesh's keyring (valid 5 minutes)",
    )
    p_token.add_argument("--name", help="display name claim")
    p_token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires (default a day)")
    p_token.set_defaults(func=token)

    p_keygen = commands.add_parser(
        "keygen",
        help="make an Ed25519 service key pair per service in FOLDER "
        "(only those missing): FOLDER/<service>.key, FOLDER/public/",
    )
    p_keygen.add_argument("folder", nargs="?", help="default: the data folder's development keyring")
    p_keygen.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_keygen.set_defaults(func=keygen)

    p_serve = commands.add_parser("serve", help="run one service in the foreground (configured by CHAT_* variables)")
    p_serve.add_argument("service", choices=SERVICES)
    p_serve.add_argument(
        "--data-dir",
        help="join the mesh `chatmesh up` runs in this folder (default: CHAT_* variables alone, as in a container)",
    )
    p_serve.set_defaults(func=serve)

    p_migrate = commands.add_parser(
        "migrate", help="apply the conversation and message schema migrations to CHAT_DATABASE_URL, then exit"
    )
    p_migrate.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_migrate.set_defaults(func=migrate)

    p_dead = commands.add_parser("dead-letter", help="list or replay events that delivery gave up on")
    p_dead.add_argument("action", choices=["list", "replay"])
    p_dead.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_dead.add_argument(
        "--notifications", action="store_true", help="the push notifications workers gave up on, instead of events"
    )
    p_dead.set_defaults(func=dead_letter)

    p_push = commands.add_parser(
        "push-worker",
        help="POST the mesh's push notifications to a webhook, signed (HMAC-SHA256 with CHAT_PUSH_WEBHOOK_SECRET)",
    )
    p_push.add_argument("--webhook", required=True, help="the URL each notification is POSTed to as JSON")
    p_push.add_argument("--group", default="push", help="the consumer group workers share (default push)")
    p_push.add_argument(
        "--consumer",
        help="this worker's name in the group; a restart under the same name resumes at once (default: host-pid)",
    )
    p_push.add_argument("--concurrency", type=int, default=16, help="POSTs at once (default 16)")
    p_push.add_argument("--timeout", type=float, default=5.0, help="seconds a POST may take (default 5)")
    p_push.add_argument(
        "--data-dir", help="join the mesh `chatmesh up` runs in this folder (default: CHAT_* variables alone)"
    )
    p_push.set_defaults(func=push_worker)

    p_status = commands.add_parser(
        "status",
        help="each service's health, the outbox backlog, fan-out pending and dead letters of the mesh in --data-dir",
    )
    p_status.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_status.set_defaults(func=status)

    p_bench = commands.add_parser(
        "bench", help="measure the mesh: connections, throughput, history, ceiling (pip install 'chatmesh[bench]')"
    )
    add_bench_arguments(p_bench)
    p_bench.add_argument(
        "--data-dir",
        help="bench the mesh `chatmesh up` runs in this folder (its edge, secret, "
        "PostgreSQL and Redis); default: a mesh of its own",
    )
    p_bench.set_defaults(func=bench)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (meshdir.NoMesh, ConfigError) as exc:  # a setting or a folder: the user can fix it, no traceback
        print(f"chatmesh {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, psycopg.Error, redis.RedisError) as exc:  # a server that does not answer
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"chatmesh {args.command}: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`chatmesh bench`'s flags (kept free of heavy imports: the CLI loads this on every start)."""

from __future__ import annotations

import argparse

SCENARIOS = ("connections", "throughput", "history", "ceiling")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a running edge (default: start an embedded mesh in a temp folder, on free ports)")
    p.add_argument(
        "--jwt-secret",
        help="the mesh's HS256 secret, to sign bench users' tokens (with --url; default $CHAT_JWT_SECRET)",
    )
    p.add_argument(
        "--database-url",
        help="with --url: the mesh's PostgreSQL (history is seeded with COPY, the ceiling "
        "runs there); without: a server to run the bench mesh on, in a fresh "
        "database",
    )
    p.add_argument(
        "--redis-url",
        help="with --url: the mesh's Redis (ceiling); without: a server to run the bench "
        "mesh on, under a fresh key prefix",
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of " + ", ".join(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="a small run of every scenario in under a minute (smoke test)")
    p.add_argument("--out", help="folder for results.json and the plots (default ./bench-results/<time>)")
    p.add_argument("--no-plots", action="store_true")
    g = p.add_argument_group("the bench's own mesh (without --url)")
    g.add_argument(
        "--message-replicas",
        type=int,
        default=1,
        metavar="N",
        help="message service replicas, each with its own ports; every caller reaches all of them round robin",
    )
    g.add_argument(
        "--edges",
        type=int,
        default=1,
        metavar="M",
        help="edges, each with its own port; the load generator spreads its sockets over them round robin "
        "(members of one group land on different edges, so deliveries cross edges)",
    )
    g.add_argument(
        "--no-rate-limits",
        action="store_true",
        help="lift the per-user send/REST limits and the per-socket frame limits (one group of 10 at 600 "
        "msg/s is 60 sends/s per user, past the default 600/60); the report says so",
    )
    g = p.add_argument_group("connections")
    g.add_argument("--sockets", type=int, default=10_000, help="idle WebSockets to open (default 10000)")
    g.add_argument("--idle-s", type=float, default=30.0, help="how long to hold them idle to measure heartbeats")
    g = p.add_argument_group("throughput")
    g.add_argument(
        "--runs",
        nargs="+",
        default=["10:1000"],
        metavar="SIZE:RATE[/RATE...]",
        help="group size (2 = direct) and offered messages/s, e.g. 10:500/1000 100:100 2:1000",
    )
    g.add_argument("--senders", type=int, default=200, help="users (sockets) per run, split into conversations")
    g.add_argument("--duration", type=float, default=60.0, help="seconds each rate is offered")
    g.add_argument(
        "--workers",
        type=int,
        default=2,
        help="load generator processes (connections: at least one per 2,500 sockets, at most 8, unless more)",
    )
    g.add_argument(
        "--ack",
        choices=["events", "delivered"],
        default="events",
        help="how receivers acknowledge: events_ack in batches, or chat:message_delivered per message "
        "(which also records a delivery receipt and announces it)",
    )
    g.add_argument(
        "--profile",
        action="store_true",
        help="sample the services with py-spy: during the first throughput step of each run "
        "(profile-g<size>/) and the edge while it holds the idle sockets (profile-idle/)",
    )
    g.add_argument(
        "--ramp",
        action="store_true",
        help="raise the first rate by 25%% a step until p99 misses twice in a row, or a step loses",
    )
    g.add_argument("--ramp-p99-ms", type=float, default=100.0)
    g.add_argument("--ramp-max", type=float, default=20_000.0)
    g = p.add_argument_group("history")
    g.add_argument("--history-messages", type=int, default=100_000)
    g.add_argument("--history-duration", type=float, default=15.0)
    g.add_argument("--history-concurrency", default="1,8", help="readers in flight, one phase each")
    g = p.add_argument_group("ceiling")
    g.add_argument("--ceiling-duration", type=float, default=10.0)
    g.add_argument("--pg-connections", type=int, default=16)
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the embedded mesh's services (e.g. CHAT_LOG_LEVEL=WARNING)",
    )


def apply_quick(args: argparse.Namespace) -> None:
    args.sockets = 200
    args.idle_s = 2.0
    args.runs = ["10:40", "2:20"]
    args.senders = 40
    args.duration = 3.0
    args.workers = 1
    args.ramp = False
    args.history_messages = 2_000
    args.history_duration = 2.0
    args.history_concurrency = "1,4"
    args.ceiling_duration = 2.0
    args.pg_connections = 4

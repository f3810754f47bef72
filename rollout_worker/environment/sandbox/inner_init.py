"""Runs first inside every sandboxed command (stdlib only: executed by the sandbox's own Python with `-I -S`).

It applies the resource limits, optionally opens the agent's only way out — a TCP listener on 127.0.0.1:<port>
that pipes each connection to the unix socket bind-mounted from the host (design §7) — then runs the command,
forwards termination signals to it and exits with its status. Kept free of project imports on purpose: the
sandbox sees this one file, not the package.

Usage: python -I -S inner_init.py [--relay-port P --relay-socket PATH] [--rlimit NAME=VALUE ...] -- argv...
"""

import argparse
import resource
import signal
import socket
import subprocess
import sys
import threading

_RLIMITS = {"as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC, "fsize": resource.RLIMIT_FSIZE,
            "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}
_CHUNK = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # Half-close so the other direction can still finish (HTTP bodies after the request is sent).
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _serve_connection(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.settimeout(10)
        upstream.connect(socket_path)
        upstream.settimeout(None)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _start_relay(port: int, socket_path: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))  # bind before the command starts: no race with its first request
    listener.listen(64)

    def accept_loop() -> None:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=_serve_connection, args=(client, socket_path), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()


def _apply_rlimits(specs: list[str]) -> None:
    for spec in specs:
        name, _, value = spec.partition("=")
        limit = int(value)
        try:
            resource.setrlimit(_RLIMITS[name], (limit, limit))
        except (ValueError, OSError) as exc:  # the kernel may refuse some limits; the rest still apply
            print(f"[sandbox] rlimit {name}={limit} not applied: {exc}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--relay-port", type=int)
    parser.add_argument("--relay-socket")
    parser.add_argument("--rlimit", action="append", default=[])
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("[sandbox] no command given", file=sys.stderr)
        return 2
    if args.relay_port:
        _start_relay(args.relay_port, args.relay_socket)
    _apply_rlimits(args.rlimit)
    try:
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"[sandbox] cannot start {argv[0]!r}: {exc}", file=sys.stderr)
        return 127
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda s, _frame: child.send_signal(s))
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())

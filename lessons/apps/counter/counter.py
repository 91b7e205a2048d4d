"""A visit counter: a web app whose one number lives in a database, not in the app.

GET / adds one visit and answers {"replica": ..., "version": ..., "visits": N}. Each request
opens a connection to the database, counts, and closes it, so the app keeps nothing between
requests: kill it, start a new version, start four copies of it, and the count goes on.
GET /health answers at once without asking the database: the app itself is up.
When the database cannot be reached within a second, it answers 503 at once, instead of
hanging until the client gives up.

It serves one request at a time, as an app server with one worker does: more requests at
once need more replicas (lesson 02's scale-out). ``GET /?wait_ms=20`` makes the visit wait
20 ms more in the database (``SELECT SLEEP(0.02)``), as a page whose query is slower, or
that asks another service, would: time when the replica can do nothing else.

Settings, from the environment: DB_HOST (default db), DB_USER, DB_PASSWORD, DB_NAME,
APP_VERSION (the image sets it), PORT (default 8000).
"""

import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import pymysql

VERSION = os.environ.get("APP_VERSION", "1")
REPLICA = socket.gethostname()
DB = {"host": os.environ.get("DB_HOST", "db"), "user": os.environ.get("DB_USER", "app"),
      "password": os.environ.get("DB_PASSWORD", ""),
      "database": os.environ.get("DB_NAME", "app"),
      # A database that is gone must cost a second, not a minute: every wait is bounded.
      "connect_timeout": 1, "read_timeout": 1, "write_timeout": 1, "autocommit": True}

# One atomic statement: the first visit makes the row, every later one adds 1, and
# LAST_INSERT_ID(expr) hands this request its own new value (no second query, no race).
COUNT = ("INSERT INTO visits (id, n) VALUES (1, LAST_INSERT_ID(1)) "
         "ON DUPLICATE KEY UPDATE n = LAST_INSERT_ID(n + 1)")
TABLE = "CREATE TABLE IF NOT EXISTS visits (id INT PRIMARY KEY, n BIGINT NOT NULL)"
NO_SUCH_TABLE = 1146


def visit(wait_ms: int = 0) -> int:
    """Count one visit in the database (then wait ``wait_ms`` there); the visits so far."""
    with pymysql.connect(**DB) as conn, conn.cursor() as cur:
        try:
            cur.execute(COUNT)
        except pymysql.err.ProgrammingError as exc:
            if exc.args[0] != NO_SUCH_TABLE:
                raise
            cur.execute(TABLE)  # the first visit ever, on a new database
            cur.execute(COUNT)
        visits = cur.lastrowid
        if wait_ms:
            cur.execute("SELECT SLEEP(%s)", (wait_ms / 1000,))
        return visits


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path == "/health":
            self.answer(200, {"status": "up"})
            return
        if url.path != "/":
            self.answer(404, {"error": "not found"})
            return
        try:
            wait_ms = min(max(int(parse_qs(url.query).get("wait_ms", ["0"])[0]), 0), 500)
        except ValueError:
            self.answer(400, {"error": "wait_ms must be a number of milliseconds"})
            return
        try:
            self.answer(200, {"visits": visit(wait_ms)})
        except pymysql.err.MySQLError as exc:
            # The app is up; what it depends on is not. 503 says exactly that.
            self.answer(503, {"error": f"database unreachable: {exc.args[-1]}"})

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps({"replica": REPLICA, "version": VERSION, **body}).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args) -> None:
        if args and str(args[1]) != "200":  # errors only: a burst would flood the log
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"counter {VERSION} on {REPLICA}:{port}, database at {DB['host']}", flush=True)
    HTTPServer.request_queue_size = 64  # connections waiting their turn (Python's default: 5)
    HTTPServer(("0.0.0.0", port), Handler).serve_forever()

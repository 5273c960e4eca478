"""HTTP questions from inside a network namespace, for the exporter's end-to-end tests.

    python http_get.py get URL                       status and body, as one JSON line
    python http_get.py parallel URL THREADS COUNT    THREADS clients, COUNT GETs each; statuses
    python http_get.py query BASE EXPR               a Prometheus instant query: its result
    python http_get.py ready URL SECONDS             wait until URL answers 200 (bounded)

Standard library only; every request has a timeout.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def parallel(url: str, threads: int, count: int) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(count):
            try:
                status, body = get(url)
                status = status if "netoproc_" in body else -status
            except OSError:
                status = 0
            with lock:
                statuses.append(status)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    print(json.dumps({"statuses": statuses}), flush=True)


def main() -> None:
    command = sys.argv[1]
    if command == "get":
        status, body = get(sys.argv[2])
        print(json.dumps({"status": status, "body": body}))
    elif command == "parallel":
        parallel(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif command == "query":
        query = urllib.parse.urlencode({"query": sys.argv[3]})
        status, body = get(f"{sys.argv[2]}/api/v1/query?{query}")
        answer = json.loads(body)
        result = answer["data"]["result"] if status == 200 else answer.get("error")
        print(json.dumps({"status": status, "result": result}))
    elif command == "ready":
        deadline = time.monotonic() + float(sys.argv[3])
        while time.monotonic() < deadline:
            try:
                if get(sys.argv[2])[0] == 200:
                    print("ready", flush=True)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        print("never ready", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

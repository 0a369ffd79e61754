"""A separate process for test_ratelimit: its own RateLimiter on a shared Redis hammers one ``sub``.

``python -m tests.gateway.hammer REDIS_URL SUB BURST REQUESTS THREADS``: prints ``ready``, waits for a line
on stdin (so every process starts at once), sends REQUESTS hits from THREADS threads, prints a JSON summary.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import redis

from gateway.ratelimit import Quota, RateLimiter


def main() -> None:
    url, subject = sys.argv[1], sys.argv[2]
    burst, requests, threads = (int(value) for value in sys.argv[3:6])
    client = redis.Redis.from_url(url, socket_timeout=10, health_check_interval=0)
    quota = Quota(burst, 3600.0, burst)  # one request every 3600/burst seconds: nothing refills during the run
    # "closed": a Redis error would show as source "unavailable", never as an extra allowed request.
    limiter = RateLimiter(client, {"default": quota}, quota, failure_mode="closed")
    if not limiter.ping():
        raise SystemExit("redis unreachable")
    print("ready", flush=True)
    sys.stdin.readline()
    with ThreadPoolExecutor(threads) as pool:
        decisions = list(pool.map(lambda _: limiter.hit(subject), range(requests)))
    summary = {"allowed": sum(d.allowed for d in decisions), "sources": sorted({d.source for d in decisions})}
    print(json.dumps(summary), flush=True)
    client.close()


if __name__ == "__main__":
    main()

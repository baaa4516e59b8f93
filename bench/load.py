"""Load for the plugin's API: closed loop with wrk, open loop at a set rate."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

import httpx2

WRK_HINT = "install Debian's wrk (tools/install-system-deps.sh bench does)"


def wrk(
    url: str, seconds: float, connections: int, body: dict[str, Any], threads: int = 1
) -> dict[str, float]:
    """POST ``body`` to ``url`` as fast as ``connections`` keep-alive
    connections allow; wrk, written in C, leaves the CPU to tether."""
    if shutil.which("wrk") is None:
        raise RuntimeError(f"wrk is missing: {WRK_HINT}")
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        lua = pathlib.Path(tmp) / "post.lua"
        lua.write_text(script)
        run = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(lua), url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    requests = re.search(r"(\d+) requests in ([\d.]+)(m?s)", run.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    if not requests:
        raise RuntimeError(f"cannot read wrk's output:\n{run.stdout}\n{run.stderr}")
    duration = float(requests.group(2)) / (1000 if requests.group(3) == "ms" else 1)
    count = int(requests.group(1))
    failed = int(errors.group(1)) if errors else 0
    return {"requests": count, "seconds": duration, "per_s": (count - failed) / duration, "failed": failed}


def open_loop(url: str, rate: float, seconds: float, body: dict[str, Any]) -> dict[str, float]:
    """Send ``rate`` requests a second for ``seconds``, each at its scheduled
    time whether or not earlier ones were answered: the load a population
    of independent clients makes."""
    return asyncio.run(_open_loop(url, rate, seconds, body))


async def _open_loop(url: str, rate: float, seconds: float, body: dict[str, Any]) -> dict[str, float]:
    total = int(rate * seconds)
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    failed = 0
    async with httpx2.AsyncClient(limits=limits, timeout=30) as client:

        async def send() -> None:
            nonlocal failed
            try:
                answer = await client.post(url, json=body)
                failed += answer.status_code != 202
            except httpx2.HTTPError:
                failed += 1

        start = time.monotonic()
        pending = []
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(send()))
        await asyncio.gather(*pending)
        took = time.monotonic() - start
    return {"requests": total, "seconds": took, "per_s": (total - failed) / took, "failed": failed}

"""``trust-streams explain``: why an agent has the score it has, asked of any worker."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from streams.console import UserError, load_settings


def _fetch(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"no worker answered at {url}: {exc}") from exc


def _render(e: dict[str, Any]) -> str:
    status = "REVOKED" if e["revoked"] else ("at risk" if e["at_risk"] else "ok")
    lines = [
        f"{e['agent_did']}: {e['total_score']} ({e['tier']}, {status}, trend {e['trend']}, "
        f"config v{e['config_version']})",
        "",
        f"{'dimension':<22} {'score':>6} {'weight':>7} {'points':>7} {'signals':>8} {'window':>7}",
    ]
    for name, d in e["dimensions"].items():
        lines.append(
            f"{name:<22} {d['score']:>6.1f} {d['weight']:>7.2f} {d['contribution']:>7.1f} "
            f"{d['signal_count']:>8} {d['window_signal_count']:>7}"
        )
    if e["revocation"]:
        r = e["revocation"]
        lines += ["", f"revoked at {r['revoked_at']}: {r['reason']}"]
    lines += ["", "last signals:"]
    lines += [
        f"  {s['timestamp']}  {s['dimension']:<22} {s['value']:.2f}  {s['source']}"
        for s in e["recent_signals"]
    ] or ["  (none)"]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    base = (args.url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
    agent = urllib.parse.quote(args.agent, safe=":")
    status, body = _fetch(f"{base}/agents/{agent}/explanation")
    if status == 404:
        print(f"trust-streams: unknown agent {args.agent}", file=sys.stderr)
        return 1
    if status != 200:
        raise UserError(body.get("error", f"the worker answered {status}"))
    print(json.dumps(body, indent=2) if args.json else _render(body))
    return 0

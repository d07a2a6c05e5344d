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
from streams.console.safe_text import safe


def _fetch(url: str, token: str = "") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:  # not JSON: a proxy's page, say
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"no worker answered at {url}: {exc}") from exc


def _render(e: dict[str, Any]) -> str:
    """The explanation as a terminal shows it; every text from the worker (DIDs, signal sources,
    reasons: anything a producer could have put there) made safe to print."""
    status = "REVOKED" if e["revoked"] else ("at risk" if e["at_risk"] else "ok")
    lines = [
        f"{safe(e['agent_did'])}: {e['total_score']} ({safe(e['tier'])}, {status}, "
        f"trend {safe(e['trend'])}, config v{e['config_version']})",
        "",
        f"{'dimension':<22} {'score':>6} {'weight':>7} {'points':>7} {'signals':>8} {'window':>7}",
    ]
    for name, d in e["dimensions"].items():
        lines.append(
            f"{safe(name):<22} {d['score']:>6.1f} {d['weight']:>7.2f} {d['contribution']:>7.1f} "
            f"{d['signal_count']:>8} {d['window_signal_count']:>7}"
        )
    if e["revocation"]:
        r = e["revocation"]
        lines += ["", f"revoked at {safe(r['revoked_at'])}: {safe(r['reason'])}"]
    lines += ["", "last signals:"]
    lines += [
        f"  {safe(s['timestamp'])}  {safe(s['dimension']):<22} {s['value']:.2f}  "
        f"{safe(s['source'])}"
        for s in e["recent_signals"]
    ] or ["  (none)"]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    base = (
        args.url or settings.web_advertised_url or f"http://{settings.web_host}:{settings.web_port}"
    ).rstrip("/")
    agent = urllib.parse.quote(args.agent, safe=":")
    # The read token, else the admin token (which grants reads too): whichever this host has.
    token = settings.api_read_token.get_secret_value() or settings.admin_token.get_secret_value()
    status, body = _fetch(f"{base}/agents/{agent}/explanation", token)
    if status == 404:
        print(f"trust-streams: unknown agent {safe(args.agent)}", file=sys.stderr)
        return 1
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        raise UserError(safe(error or f"the worker answered {status}"))
    print(json.dumps(body, indent=2) if args.json else _render(body))
    return 0

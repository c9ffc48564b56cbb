"""`paas-agent`: the node agent's entry point (settings, logging, signals, exit codes).

Exit codes: 0 after SIGTERM/SIGINT (containers are left running and re-adopted on the next
start), 2 for bad settings, 1 if the admin port cannot be bound or a loop of the agent died of
a bug (a supervisor should then restart it; the containers are re-adopted).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Sequence

from agent.daemon import Agent, AgentCrashed
from agent.settings import AgentSettings, SettingsError
from paas.consul import InvalidConsulUrl, check_url


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT; return the process exit code."""
    try:
        settings = AgentSettings.from_args(argv)
        check_url(settings.effective_consul_url)
        token = settings.read_join_token()
    except (SettingsError, InvalidConsulUrl) as exc:
        print(f"paas-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not token:
        logging.getLogger("agent").warning(
            "no join token set (--join-token-file); the controller will likely refuse this node")
    try:
        asyncio.run(_run(settings, token))
    except AgentCrashed as exc:
        print(f"paas-agent: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(settings: AgentSettings, token: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Agent(settings, token=token).run(stop)


if __name__ == "__main__":
    sys.exit(main())

"""Screenshots of the demo page for the README: ``python -m demo.screenshot``.

Starts the demo on free ports, opens the page in headless Chromium, picks a user, and
writes the feed view (and, with ``--metrics``, the metrics view after some traffic).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from demo.browser import launch
from demo.run import DEFAULT_CONFIG, DEFAULT_DATA, REPO, Demo, DemoOptions

READY = "document.body.dataset.state === 'ready'"


async def capture(
    options: DemoOptions, out: Path, metrics_out: Path | None, user_index: int, beta: bool
) -> None:
    demo = Demo(options)
    await demo.start()
    try:
        async with launch() as browser:
            page = await browser.new_page(width=1280, height=900)
            await page.goto(f"{demo.proxy_url}/")
            await page.wait_for(READY)
            # Every user once, so the figures shown are warm ones (pools open, item
            # vectors cached), as they are after the first few requests of a real run.
            order = [p.user_id for p in demo.personas]
            if order:
                pick = order[min(user_index, len(order) - 1)]
                for user in [*order, pick]:
                    await page.click(f'#users .chip[data-user="{user}"]')
                    await page.wait_for(
                        f"{READY} && document.getElementById('ranked-list').dataset.user"
                        f" === '{user}'"
                    )
            if beta:
                await page.click("label.switch")
                await page.wait_for(
                    f"{READY} && document.getElementById('ranked-list').dataset.beta === '1'"
                )
            await page.screenshot(out)
            print(f"wrote {out}")
            if metrics_out is not None:
                await page.click("#tab-metrics")
                await page.click("#traffic-btn")
                await page.wait_for("document.body.dataset.traffic === '1'", timeout_s=30)
                await page.wait_for("Number(document.body.dataset.stats || 0) > 100")
                await page.screenshot(metrics_out)
                print(f"wrote {metrics_out}")
    finally:
        await demo.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "demo.png")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="demo rankgate.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="demo embeddings")
    parser.add_argument("--metrics", type=Path, default=None, help="also the metrics view")
    parser.add_argument("--user", type=int, default=0, help="which of the page's users")
    parser.add_argument("--beta", action="store_true", help="with the beta toggle on")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    options = DemoOptions(config=args.config, data=args.data, port=0, origin_port=0, admin_port=0)
    asyncio.run(capture(options, args.out, args.metrics, args.user, args.beta))
    return 0


if __name__ == "__main__":
    sys.exit(main())

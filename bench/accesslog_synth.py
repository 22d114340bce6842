"""A synthetic but realistic Combined access log, to try `foresight eval --log` and `replay --log`.

The site: a home page, categories, articles (some ``.html``, some ``/article.php?id=``) and a
few static pages. Each page links to its category, a handful of related articles (some links
much likelier than others), the home page and the static pages. Visitors (some sharing an
address behind NAT, told apart by their browsers) arrive on the home page or, from a search
engine, on a popular article (Zipf), then follow links with log-normal reading times and leave
with some probability at each page; they come back for more sessions over the days. Each page
view loads its subresources as a browser does: the stylesheet and script on a session's first
page (revalidated with 304 now and then), the fonts with the stylesheet as Referer, the page's
own images, a favicon without Referer. Around them: search-engine crawlers, an uptime monitor
on /healthz, curl, POSTs and HEADs, 404s and 500s, and a share of garbage lines (truncated,
bad dates, binary noise). Seeded: the same arguments write the same file.

    .venv/bin/python bench/accesslog_synth.py /tmp/site.log.gz
    .venv/bin/foresight eval --log /tmp/site.log.gz

Prints one JSON object: what was written, to compare with what `eval --log` reports.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from producers.logline import format_line

START = 1_717_200_000.0  # 2024-06-01 00:00 UTC
DAY = 86_400.0
TZ = 120  # the server's clock: +0200
SITE = "https://www.example.org"
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/125.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari",
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/125.0 Mobile",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/125.0 Edg/125.0",
]
ROBOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
]


@dataclass
class Page:
    path: str
    size: int
    images: list[tuple[str, int]]
    links: list[str]
    weights: list[float]


def build_site(rng: random.Random, categories: int, articles: int) -> dict[str, Page]:
    def page(path: str) -> Page:
        base = path.split("?")[0].rstrip("/") or "/home"
        own = [f"/img{base}-{n}.jpg" for n in range(rng.randint(1, 3))]
        shared = [f"/img/shared-{rng.randrange(40)}.png" for _ in range(rng.randrange(3))]
        images = [(i, int(rng.lognormvariate(10.5, 0.8))) for i in own] + [
            (i, 3000) for i in shared
        ]
        return Page(path, int(rng.lognormvariate(10, 0.5)), images, [], [])

    static = ["/about", "/contact", "/privacy"]
    cats = [f"/news/{c}/" for c in range(categories)]
    arts = [
        f"/news/{a % categories}/story-{a}.html" if a % 3 else f"/article.php?id={a}"
        for a in range(articles)
    ]
    pages = {p: page(p) for p in ["/", *static, *cats, *arts]}
    for p in pages.values():
        related = rng.sample(arts, 6)
        p.links = ["/", *cats[:3], *related, *static[:1]]
        # the first related story is the headline link: many follow it
        p.weights = [3, 1, 1, 1, 12, 5, 3, 2, 1, 1, 0.3]
    return pages


def session_lines(
    rng: random.Random, site: dict[str, Page], arts: list[str], host: str, agent: str, t: float
) -> tuple[list[tuple[float, str]], int]:
    lines: list[tuple[float, str]] = []
    zipf = [1 / (rank + 1) for rank in range(len(arts))]
    path = "/" if rng.random() < 0.4 else rng.choices(arts, zipf)[0]
    referer = "https://www.google.com/" if path != "/" else None
    views = 0
    while True:
        page, views = site[path], views + 1
        status = 304 if rng.random() < 0.05 else 200
        size = 0 if status == 304 else page.size
        lines.append(
            (
                t,
                format_line(
                    host, t, path, status=status, size=size, referer=referer, agent=agent, tz=TZ
                ),
            )
        )
        here = SITE + path
        assets: list[tuple[str, int, str | None]] = [(a, s, here) for a, s in page.images]
        if views == 1:
            assets += [("/static/site.css", 18_000, here), ("/static/app.js", 95_000, here)]
            assets += [("/fonts/body.woff2", 24_000, SITE + "/static/site.css")]
            assets += [("/favicon.ico", 1_100, None)]
        for n, (asset, asset_size, ref) in enumerate(assets):
            at = t + 0.05 + 0.3 * n * rng.random()
            cached = asset.startswith("/static") and rng.random() < 0.2
            lines.append(
                (
                    at,
                    format_line(
                        host,
                        at,
                        asset,
                        status=304 if cached else 200,
                        size=0 if cached else asset_size,
                        referer=ref,
                        agent=agent,
                        tz=TZ,
                    ),
                )
            )
        if rng.random() < 0.3 or views >= 25:
            return lines, views
        referer, t = here, t + min(rng.lognormvariate(3.4, 1.0), 1500.0)
        path = rng.choices(page.links, page.weights)[0]


def noise(rng: random.Random, site: list[str], days: float) -> list[tuple[float, str]]:
    """Crawlers, a monitor, scripts, errors."""
    lines = []
    end = START + days * DAY
    t = START
    while t < end:  # uptime monitor every 30 s
        lines.append((t, format_line("10.0.0.5", t, "/healthz", size=2, agent="UptimeRobot/2.0")))
        t += 30
    for _ in range(int(days * 1500)):
        t = rng.uniform(START, end)
        kind = rng.random()
        if kind < 0.6:
            agent = rng.choice(ROBOTS)
            lines.append(
                (t, format_line("66.249.66.1", t, rng.choice(site), size=9000, agent=agent, tz=TZ))
            )
        elif kind < 0.7:
            lines.append(
                (t, format_line("198.51.100.7", t, "/", size=9000, agent="curl/8.5.0", tz=TZ))
            )
        elif kind < 0.8:
            lines.append(
                (
                    t,
                    format_line(
                        f"192.0.2.{rng.randrange(250)}",
                        t,
                        "/api/comment",
                        method="POST",
                        status=201,
                        size=40,
                        agent=rng.choice(BROWSERS),
                        tz=TZ,
                    ),
                )
            )
        elif kind < 0.95:
            lines.append(
                (
                    t,
                    format_line(
                        f"192.0.2.{rng.randrange(250)}",
                        t,
                        f"/wp-login-{rng.randrange(999)}.php",
                        status=404,
                        size=300,
                        agent=rng.choice(BROWSERS),
                        tz=TZ,
                    ),
                )
            )
        else:
            lines.append(
                (
                    t,
                    format_line(
                        f"192.0.2.{rng.randrange(250)}",
                        t,
                        rng.choice(site),
                        method="HEAD",
                        agent=rng.choice(BROWSERS),
                        tz=TZ,
                    ),
                )
            )
    return lines


def garbage(rng: random.Random, good: list[str], share: float) -> list[str]:
    out = []
    for line in good:
        out.append(line)
        if rng.random() < share:
            kind = rng.randrange(3)
            if kind == 0:
                out.append(line[: rng.randrange(len(line) // 2)])  # truncated by a crash
            elif kind == 1:
                out.append(line.replace("/Jun/", "/Jux/"))  # a date no one can read
            else:
                out.append("".join(chr(rng.randrange(32, 255)) for _ in range(60)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the log to write (gzip when it ends in .gz)")
    parser.add_argument("--visitors", type=int, default=4000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--articles", type=int, default=400)
    parser.add_argument("--garbage", type=float, default=0.005, help="share of garbage lines")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    site = build_site(rng, categories=12, articles=args.articles)
    arts = [p for p in site if "story" in p or "article" in p]
    rng.shuffle(arts)  # popularity unrelated to the id
    lines: list[tuple[float, str]] = []
    tally: Counter[str] = Counter()
    for v in range(args.visitors):
        host = f"{rng.choice([81, 92, 176, 213])}.{rng.randrange(256)}.{v % 200}.{v % 97}"
        agent = rng.choice(BROWSERS)
        t = rng.uniform(START, START + args.days * DAY)
        while t < START + args.days * DAY:
            session, views = session_lines(rng, site, arts, host, agent, t)
            lines += session
            tally["sessions"] += 1
            tally["page_views"] += views
            t = max(when for when, _ in session) + rng.expovariate(1 / (1.5 * DAY)) + 1800
            if rng.random() < 0.5:
                break
    tally["visitors"] = args.visitors
    robots = noise(rng, list(site), args.days)
    tally["noise_lines"] = len(robots)
    lines += robots
    lines.sort(key=lambda line: line[0])
    text = garbage(rng, [line for _, line in lines], args.garbage)
    tally["garbage_lines"] = len(text) - len(lines)
    tally["lines"] = len(text)
    data = ("\n".join(text) + "\n").encode()
    args.out.write_bytes(gzip.compress(data, mtime=0) if args.out.suffix == ".gz" else data)
    print(json.dumps({"out": str(args.out), "bytes": args.out.stat().st_size, **tally}))


if __name__ == "__main__":
    main()

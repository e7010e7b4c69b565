"""Case pages (以案释法): the mobile HTML index at /cases/ and one article per case at /cases/<id>.

This module owns the routes, the HTML and the response headers of the case pages; the
stylesheet lives in bot/templates/case_pages.css. Content is static, so every page is
rendered once when the routes are added and then served from memory with an ETag.

Every piece of content text goes through `html.escape(..., quote=True)`. The pages carry
no script at all; the Content-Security-Policy allows only the inlined stylesheet (by hash).
Links between pages are relative, so the pages also work behind a path prefix.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from bot.content import Content
from bot.schema import Case

SITE_NAME = "个人信息保护助手"
LOCAL_LABEL = "地方案例"
INDEX_HREF = "./"
"""From /cases/<id>, "./" is the index; relative, so a reverse-proxy prefix keeps working."""

CACHE_CONTROL = "public, max-age=600"
"""Pages only change on redeploy; ten minutes lets a correction spread quickly, and the ETag
makes revalidation after that cheap."""

INDEX_INTRO = "法院、检察院办理的真实案例，用大白话讲清楚发生了什么、法律怎么规定、我们该怎么做。"
FOOTER = (
    f"{SITE_NAME} · 本页案例根据公开资料改写，用于普法宣传，不构成法律意见。"
    "遇到正在发生的诈骗、敲诈或威胁，请立即拨打110。"
)

_CSS = (resources.files("bot") / "templates" / "case_pages.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode("ascii")

SECURITY_HEADERS = {
    # No scripts, frames, forms, fonts or images: only our own inlined stylesheet.
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_LIST_ITEM = re.compile(r"^(\d{1,2})[.、．)）]\s*(.+)$")
_BULLET = re.compile(r"^[-*•·]\s+(.+)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


@dataclass(frozen=True)
class Page:
    """One rendered page: the encoded body and its entity tag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, document: str) -> Page:
        body = document.encode("utf-8")
        return cls(body, hashlib.sha256(body).hexdigest()[:32])


def add_case_pages(app: web.Application, content: Content) -> None:
    """Register the case page routes on `app`, rendering every page now."""
    index = Page.of(render_index(content))
    articles = {
        case_id: Page.of(render_case(case, content.texts.case_footer))
        for case_id, case in content.cases.items()
    }
    not_found = Page.of(render_not_found(INDEX_HREF))

    async def index_page(request: web.Request) -> web.StreamResponse:
        return _respond(request, index)

    async def case_page(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        page = articles.get(path)
        if page is not None:
            return _respond(request, page)
        # Anything else under /cases/ (unknown ids, nested paths, encoded tricks) gets the
        # friendly page; the requested path is never echoed back.
        href = _index_href(request.rel_url.raw_path)
        page = not_found if href == INDEX_HREF else Page.of(render_not_found(href))
        return _respond(request, page, status=404)

    async def to_index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(location="cases/")  # relative to /cases → /cases/

    app.router.add_get("/cases", to_index)
    app.router.add_get("/cases/", index_page)
    app.router.add_get("/cases/{path:.+}", case_page)


def _respond(request: web.Request, page: Page, status: int = 200) -> web.StreamResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": CACHE_CONTROL if status == 200 else "no-cache"}
    if status == 200:
        headers["ETag"] = f'"{page.etag}"'
        if any(tag.value == page.etag for tag in request.if_none_match or ()):
            return web.Response(status=304, headers=headers)
    return web.Response(
        status=status, body=page.body, content_type="text/html", charset="utf-8", headers=headers
    )


def _index_href(raw_path: str) -> str:
    """The relative link back to /cases/ from /cases/<anything>, as the browser resolves it
    (on the still-encoded path, where %2F is not a separator)."""
    depth = raw_path.count("/") - 2
    return "../" * depth if depth else INDEX_HREF


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def render_index(content: Content) -> str:
    """The index: every case, newest first, as a tappable card."""
    cases = sorted(content.cases.values(), key=lambda c: (c.date, c.id), reverse=True)
    cards = "\n".join(_card(case) for case in cases)
    heading = content.texts.cases_heading
    body = f"""<h1 id="page-title">{_e(heading)}</h1>
<p class="intro">{INDEX_INTRO}共 {len(cases)} 个案例。</p>
<ul class="cases">
{cards}
</ul>"""
    return _document(heading, "以案释法：个人信息保护典型案例", body, index_href=INDEX_HREF)


def _card(case: Case) -> str:
    return f"""<li><a class="card" href="{_e(case.id)}">
{_labels(case)}
<h2>{_e(case.title)}</h2>
<p class="meta">{_e(case.court)} · {_date(case.date)}{_e(case.date_means or "")}</p>
<p>{_e(case.summary)}</p>
</a></li>"""


def render_case(case: Case, footnote: str) -> str:
    """The full article for one case."""
    articles = "\n".join(
        f"<li>{_e(a.cite())}"
        + (f'<span class="note">{_e(a.note)}</span>' if a.note else "")
        + "</li>"
        for a in case.articles
    )
    sources = "\n".join(f"<li>{_source(s.name, s.url)}</li>" for s in case.sources)
    tags = "".join(f"<li>#{_e(tag)}</li>" for tag in case.tags)
    tags_block = f'<ul class="tags" aria-label="标签">{tags}</ul>' if tags else ""
    body = f"""<article>
{_labels(case)}
<h1 id="case-title">{_e(case.title)}</h1>
<p class="meta">{_e(case.court)} · {_date(case.date)}{_e(case.date_means or "")}</p>
<p class="summary" id="summary">{_e(case.summary)}</p>
<section id="facts"><h2>案情</h2>
{_rich(case.facts)}
</section>
<section id="outcome"><h2>裁判结果</h2>
{_rich(case.outcome)}
</section>
<section id="legal-point" class="legal-point"><h2>法律要点</h2>
{_rich(case.legal_point)}
</section>
<section id="articles" class="articles"><h2>适用法条</h2>
<ul>
{articles}
</ul>
</section>
<section id="lesson" class="lesson"><h2>给您的提醒</h2>
{_rich(case.lesson)}
</section>
<section id="sources" class="sources"><h2>来源</h2>
<ul>
{sources}
</ul>
</section>
{tags_block}
<p class="footnote">{_e(footnote)}</p>
</article>
<nav class="back" aria-label="返回"><a href="{INDEX_HREF}">← 返回案例列表</a></nav>"""
    return _document(case.title, case.summary, body, index_href=INDEX_HREF)


def render_not_found(index_href: str) -> str:
    """The friendly 404 page, linking back to the index."""
    body = f"""<h1 id="page-title">没有找到这个案例</h1>
<p>链接可能不完整，或者这个案例已经更新了地址。</p>
<p>您可以回到案例列表，看看其他典型案例。</p>
<nav class="back" aria-label="返回"><a href="{_e(index_href)}">← 查看全部案例</a></nav>"""
    return _document("没有找到这个案例", "没有找到这个案例", body, index_href=index_href)


def _document(title: str, description: str, body: str, *, index_href: str) -> str:
    return f"""<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<meta name="description" content="{_e(description)}">
<title>{_e(title)} · {SITE_NAME}</title>
<style>{_CSS}</style>
</head>
<body>
<header class="site"><a href="{_e(index_href)}">{SITE_NAME} · 以案释法</a></header>
<main>
{body}
</main>
<footer><p>{_e(FOOTER)}</p></footer>
</body>
</html>
"""


def _labels(case: Case) -> str:
    local = f'<span class="label local">{LOCAL_LABEL}</span>' if case.local else ""
    return f'<p class="labels"><span class="label">{_e(case.kind)}</span>{local}</p>'


def _date(date: str) -> str:
    """2022-12-26 → 2022年12月26日 (or 2022年12月), machine-readable in <time>."""
    parts = [int(p) for p in date.split("-")]
    shown = "".join(f"{n}{unit}" for n, unit in zip(parts, "年月日", strict=False))
    return f'<time datetime="{_e(date)}">{shown}</time>'


def _source(name: str, url: str | None) -> str:
    if not url:
        return _e(name)
    return f'<a href="{_e(url)}" rel="noopener noreferrer external">{_e(name)}</a>'


def _rich(text: str) -> str:
    """Multi-line YAML text → HTML: each line a paragraph, runs of "1." or "-" lines a list."""
    return "\n".join(_blocks(line.strip() for line in text.splitlines() if line.strip()))


def _blocks(lines: Iterable[str]) -> Iterable[str]:
    items: list[str] = []
    kind = ""  # "ol" or "ul" while inside a list
    start = 1
    for line in lines:
        numbered, bullet = _LIST_ITEM.match(line), _BULLET.match(line)
        line_kind = "ol" if numbered else "ul" if bullet else ""
        if items and line_kind != kind:
            yield _list(kind, items, start)
            items = []
        if numbered:
            if not items:
                start = int(numbered.group(1))
            items.append(numbered.group(2))
        elif bullet:
            items.append(bullet.group(1))
        else:
            yield f"<p>{_inline(line)}</p>"
        kind = line_kind
    if items:
        yield _list(kind, items, start)


def _list(kind: str, items: list[str], start: int) -> str:
    opening = f'<ol start="{start}">' if kind == "ol" and start != 1 else f"<{kind}>"
    return opening + "".join(f"<li>{_inline(item)}</li>" for item in items) + f"</{kind}>"


def _inline(text: str) -> str:
    """Escape, then turn **bold** into <strong> (escaping never produces an asterisk)."""
    return _BOLD.sub(r"<strong>\1</strong>", _e(text))

"""Case pages over real HTTP on 127.0.0.1: index, articles, escaping, 404s, HEAD and headers.

`write_fixture_content` builds a small content tree in tmp (also used by
test_pages_browser.py) so these tests never depend on the case files being edited.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from bot.content import Content, load_content
from bot.pages import add_case_pages

REPO = Path(__file__).resolve().parent.parent

LONG_URL = "https://www.example.gov.cn/" + "typical-cases/" * 8 + "a" * 120 + "?id=" + "9" * 40
LONG_WORD = "Supercalifragilistic" * 10
HOSTILE_TITLE = "<script>alert(\"x\")</script> & '引号'"
HOSTILE_URL = 'https://example.org/case?a=1&b="><script>alert(1)</script>'

ENTRIES_YAML = """\
entries:
  - id: face_data
    title: 人脸信息
    questions: [人脸信息怎么保护, 刷脸安全吗, 商家要刷脸怎么办]
    answer: 人脸信息属于敏感个人信息。
"""

NEWEST_YAML = """\
id: alpha_newest
title: 测“颜值”的App，偷走了你的相册
kind: 刑事
court: 上海市奉贤区人民法院
date: "2024-05-01"
summary: 一款号称能测颜值的App，装上后就在后台偷传相册照片。
facts: |
  第一段案情：他编写了一款软件。

  第二段案情：照片被传走了。
outcome: |
  法院以侵犯公民个人信息罪判处有期徒刑三年。
legal_point: |
  人脸信息属于刑法保护的**公民个人信息**。
articles:
  - law: 刑法
    article: 第二百五十三条之一
  - law: 两高《关于办理侵犯公民个人信息刑事案件适用法律若干问题的解释》
    article: 第五条
    note: 五百条以上属情节严重
lesson: |
  请记住下面几点：
  1. 只从官方应用商店下载App。
  2. 关掉不需要的相册权限。
  3. 发现被盗用，拨打110报警。
sources:
  - name: 最高人民法院指导性案例第192号
    url: https://www.court.gov.cn/
  - name: 《人民司法》评析
tags: [人脸信息, App]
related: [face_data]
"""

LOCAL_YAML = f"""\
id: beta_local
title: 长网址也不会撑破页面{"W" * 26}
kind: 民事公益诉讼
court: 某市某区人民检察院
date: "2023-01"
local: true
summary: 一个地方检察院办理的公益诉讼案件，来源网址很长。
facts: |
  这一段里有一个很长的英文单词：{LONG_WORD}，还有一个很长的网址：{LONG_URL}
outcome: |
  - 公司删除了收集的信息。
  - 公司公开赔礼道歉。
legal_point: |
  收集个人信息要合法、正当、必要。
articles:
  - law: 个人信息保护法
    article: 第十条
lesson: |
  2. 从第二条开始编号的清单。
  3. 第三条。
sources:
  - name: 地方检察院发布（网址很长）
    url: {LONG_URL}
"""

HOSTILE_YAML = f"""\
id: gamma_escape
title: '{HOSTILE_TITLE.replace("'", "''")}'
kind: 其他
court: 某法院 & "引号" <b>法院</b>
date: "2022-06-30"
summary: '摘要里有 <img src=x onerror=alert(1)> 和 "双引号" & 单引号''。'
facts: |
  事实里有 <script>alert('facts')</script> 和 &amp; 以及 "引号"。
outcome: 结果 <i>斜体</i>
legal_point: 要点 </section><h1>伪造标题</h1>
articles:
  - law: 刑法
    article: 第一条 <u>
lesson: 提醒 ' " < > &
sources:
  - name: 来源 <a href="https://evil.example/">钓鱼</a>
    url: '{HOSTILE_URL}'
tags: ["<标签>", "a&b"]
"""


def write_fixture_content(root: Path) -> Content:
    """A small, valid content tree under `root`: the real bot wording plus three cases."""
    knowledge, cases = root / "knowledge", root / "cases_explained"
    knowledge.mkdir(parents=True)
    cases.mkdir()
    for name in ("_bot.yaml", "_lexicon.yaml"):
        shutil.copy(REPO / "knowledge" / name, knowledge / name)
    (knowledge / "topics.yaml").write_text(ENTRIES_YAML, encoding="utf-8")
    for case_id, text in (
        ("alpha_newest", NEWEST_YAML),
        ("beta_local", LOCAL_YAML),
        ("gamma_escape", HOSTILE_YAML),
    ):
        (cases / f"{case_id}.yaml").write_text(text, encoding="utf-8")
    return load_content(knowledge, cases)


def build_pages_app(content: Content) -> web.Application:
    app = web.Application()
    add_case_pages(app, content)
    return app


class Doc(HTMLParser):
    """Parsed page: every start tag with its attributes, and the text inside each element id."""

    VOID = frozenset({"meta", "link", "br", "img", "hr", "input"})

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self.style = ""
        self._open: list[tuple[str, str | None]] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag not in self.VOID:
            self._open.append((tag, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][0] == "style":
            self.style += data
        for _, element_id in self._open:
            if element_id:
                self.text[element_id] = self.text.get(element_id, "") + data

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


@pytest.fixture
def content(tmp_path: Path) -> Content:
    return write_fixture_content(tmp_path)


@pytest.fixture
async def client(content: Content) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_pages_app(content), host="127.0.0.1")) as test_client:
        yield test_client


async def get_page(client: TestClient, path: str, status: int = 200) -> tuple[str, Doc]:
    response = await client.get(path)
    assert response.status == status
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    body = await response.text()
    return body, Doc(body)


async def test_index_lists_every_case_newest_first(client: TestClient) -> None:
    body, doc = await get_page(client, "/cases/")
    hrefs = [a["href"] for a in doc.all("a") if a.get("class") == "card"]
    assert hrefs == ["alpha_newest", "beta_local", "gamma_escape"]
    for text in (
        "测“颜值”的App，偷走了你的相册",
        "上海市奉贤区人民法院",
        "2024年5月1日",
        "2023年1月",
        "一款号称能测颜值的App，装上后就在后台偷传相册照片。",
        ">刑事<",
        ">民事公益诉讼<",
    ):
        assert text in body
    assert body.count("地方案例") == 1  # only beta_local is local
    assert body.index("地方案例") > body.index('href="beta_local"')
    assert body.index("地方案例") < body.index('href="gamma_escape"')


async def test_article_shows_every_section(client: TestClient) -> None:
    body, doc = await get_page(client, "/cases/alpha_newest")
    assert doc.text["case-title"] == "测“颜值”的App，偷走了你的相册"
    for heading in ("案情", "裁判结果", "法律要点", "适用法条", "给您的提醒", "来源"):
        assert f"<h2>{heading}</h2>" in body
    assert "第一段案情" in doc.text["facts"] and "第二段案情" in doc.text["facts"]
    assert "判处有期徒刑三年" in doc.text["outcome"]
    assert "<strong>公民个人信息</strong>" in body
    assert "《刑法》第二百五十三条之一" in doc.text["articles"]
    assert "两高《关于办理侵犯公民个人信息刑事案件适用法律若干问题的解释》第五条" in body
    assert "五百条以上属情节严重" in doc.text["articles"]
    assert "关掉不需要的相册权限" in doc.text["lesson"]
    assert "2024年5月1日" in body and 'datetime="2024-05-01"' in body
    assert "上海市奉贤区人民法院" in body and ">刑事<" in body
    assert "一款号称能测颜值的App" in doc.text["summary"]
    assert "#人脸信息" in body and "#App" in body
    assert "以上案例根据公开资料改写" in body  # the bot's case footer
    assert "地方案例" not in body
    assert [a["href"] for a in doc.all("a")].count("./") == 2  # header and back link


async def test_multiline_text_becomes_paragraphs_and_lists(client: TestClient) -> None:
    body, _ = await get_page(client, "/cases/alpha_newest")
    assert "<p>第一段案情：他编写了一款软件。</p>\n<p>第二段案情：照片被传走了。</p>" in body
    assert (
        "<p>请记住下面几点：</p>\n<ol><li>只从官方应用商店下载App。</li>"
        "<li>关掉不需要的相册权限。</li><li>发现被盗用，拨打110报警。</li></ol>"
    ) in body
    local, _ = await get_page(client, "/cases/beta_local")
    assert "<ul><li>公司删除了收集的信息。</li><li>公司公开赔礼道歉。</li></ul>" in local
    assert '<ol start="2"><li>从第二条开始编号的清单。</li>' in local


async def test_sources_link_only_when_a_url_is_given(client: TestClient) -> None:
    _, doc = await get_page(client, "/cases/alpha_newest")
    source_links = [a for a in doc.all("a") if a["href"] == "https://www.court.gov.cn/"]
    assert len(source_links) == 1
    assert "noreferrer" in (source_links[0]["rel"] or "")
    assert "《人民司法》评析" in doc.text["sources"]
    assert len([a for a in doc.all("a") if (a["href"] or "").startswith("http")]) == 1


async def test_local_case_is_labelled(client: TestClient) -> None:
    body, doc = await get_page(client, "/cases/beta_local")
    assert '<span class="label local">地方案例</span>' in body
    assert LONG_URL in doc.text["facts"]
    assert [a["href"] for a in doc.all("a") if a["href"] == LONG_URL]


async def test_all_text_is_escaped(client: TestClient, content: Content) -> None:
    body, doc = await get_page(client, "/cases/gamma_escape")
    # No markup from the content survives as markup…
    assert [tag for tag, _ in doc.tags if tag in {"script", "img", "i", "b", "u"}] == []
    assert doc.all("h1") == [{"id": "case-title"}]
    assert "evil.example" not in [a["href"] for a in doc.all("a")]
    assert not re.search(r"<script", body, re.IGNORECASE)
    # …and all of it reads back exactly as written.
    case = content.cases["gamma_escape"]
    assert doc.text["case-title"] == HOSTILE_TITLE
    assert "<script>alert('facts')</script> 和 &amp; 以及 \"引号\"" in doc.text["facts"]
    assert "</section><h1>伪造标题</h1>" in doc.text["legal-point"]
    assert "提醒 ' \" < > &" in doc.text["lesson"]
    assert [a for a in doc.all("a") if a["href"] == HOSTILE_URL]
    assert [m for m in doc.all("meta") if m.get("content") == case.summary]
    index, index_doc = await get_page(client, "/cases/")
    assert not re.search(r"<(script|img)", index, re.IGNORECASE)
    assert [tag for tag, _ in index_doc.tags if tag in {"script", "img", "b"}] == []
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;引号&#x27;" in index


@pytest.mark.parametrize(
    "path",
    [
        "/cases/unknown_case",
        "/cases/" + "a" * 4000,
        "/cases/a/b/c",
        "/cases/..%2F..%2Fetc%2Fpasswd",
        "/cases/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/cases/alpha_newest/",
        "/cases/ALPHA_NEWEST",
    ],
)
async def test_unknown_paths_get_the_friendly_404(client: TestClient, path: str) -> None:
    body, doc = await get_page(client, path, status=404)
    assert doc.text["page-title"] == "没有找到这个案例"
    assert not re.search(r"<script", body, re.IGNORECASE)
    depth = path.count("/") - 2  # %2F is not a separator for the browser either
    assert doc.all("a")[-1]["href"] == ("../" * depth or "./")


async def test_dot_dot_path_is_not_resolved(client: TestClient) -> None:
    # Sent literally (encoded=True stops the client from normalising the dots away).
    url = URL(str(client.make_url("/cases/")) + "../../etc/passwd", encoded=True)
    async with client.session.get(url) as response:
        assert response.status == 404
        assert "root:" not in await response.text()


async def test_head_works_like_get_without_a_body(client: TestClient) -> None:
    for path, status in (("/cases/", 200), ("/cases/beta_local", 200), ("/cases/nope", 404)):
        got = await client.get(path)
        head = await client.head(path)
        assert head.status == got.status == status
        assert await head.read() == b""
        assert head.headers["Content-Type"] == "text/html; charset=utf-8"
        assert head.headers["Content-Length"] == str(len(await got.read()))


async def test_security_and_cache_headers(client: TestClient) -> None:
    for path in ("/cases/", "/cases/alpha_newest", "/cases/nope"):
        response = await client.get(path)
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "script-src" not in csp
        # The one inline stylesheet is allowed by its exact hash.
        doc = Doc(await response.text())
        digest = base64.b64encode(hashlib.sha256(doc.style.encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in csp
        assert "Cache-Control" in headers
    ok = await client.get("/cases/alpha_newest")
    assert re.fullmatch(r"public, max-age=\d+", ok.headers["Cache-Control"])
    missing = await client.get("/cases/nope")
    assert "max-age" not in missing.headers["Cache-Control"]


async def test_etag_revalidation_returns_304(client: TestClient) -> None:
    first = await client.get("/cases/alpha_newest")
    etag = first.headers["ETag"]
    again = await client.get("/cases/alpha_newest", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    other = await client.get("/cases/beta_local", headers={"If-None-Match": etag})
    assert other.status == 200


async def test_pages_are_mobile_ready(client: TestClient) -> None:
    body, doc = await get_page(client, "/cases/beta_local")
    assert '<html lang="zh-CN">' in body
    viewports = [m for m in doc.all("meta") if m.get("name") == "viewport"]
    assert viewports == [{"name": "viewport", "content": "width=device-width, initial-scale=1"}]
    for rule in ("overflow-wrap: anywhere", "prefers-color-scheme: dark", "@media print"):
        assert rule in doc.style
    assert 'a[href^="http"]::after' in doc.style  # printed pages show their URLs


async def test_bare_cases_path_redirects_to_the_index(client: TestClient) -> None:
    response = await client.get("/cases", allow_redirects=False)
    assert response.status == 301
    assert response.headers["Location"] == "cases/"
    followed = await client.get("/cases")
    assert followed.status == 200 and str(followed.url).endswith("/cases/")

"""Front-end hygiene: no inline styles, scripts or hard-coded API paths in the templates; no
hard-coded API paths or innerHTML in the static JavaScript.
Each failure names the file and the line."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC_JS = ROOT / "finetune_hub" / "static" / "finetune_hub"

TAG = re.compile(r"<[a-zA-Z][^<>]*>", re.S)
STYLE_ATTR = re.compile(r"\sstyle\s*=", re.I)
HANDLER_ATTR = re.compile(r"\son[a-z]+\s*=", re.I)
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I)
JSON_TYPE = re.compile(r"""\stype\s*=\s*["']?application/json["']?""", re.I)
UNSAFE_HTML = re.compile(r"\b(innerHTML|outerHTML|insertAdjacentHTML)\b")


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _templates():
    return sorted(TEMPLATES.rglob("*.html"))


def _scripts():
    return sorted(STATIC_JS.glob("*.js"))


def template_problems(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text()
    name = path.relative_to(root)
    problems = []
    for tag in TAG.finditer(text):
        if STYLE_ATTR.search(tag.group()):
            problems.append(f"{name}:{_line(text, tag.start())}: style= attribute")
        if HANDLER_ATTR.search(tag.group()):
            problems.append(f"{name}:{_line(text, tag.start())}: inline event handler")
    for match in re.finditer(r"/api/", text):
        problems.append(
            f"{name}:{_line(text, match.start())}: hard-coded /api/ path (use {{% url %}})"
        )
    for script in SCRIPT.finditer(text):
        attributes, body = script.groups()
        if body.strip() and not JSON_TYPE.search(attributes):
            problems.append(f"{name}:{_line(text, script.start())}: <script> with a body")
    return problems


def script_problems(path: Path, root: Path = ROOT) -> list[str]:
    name = path.relative_to(root)
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if "/api/" in line:
            problems.append(f"{name}:{number}: hard-coded /api/ path (render it with {{% url %}})")
        if UNSAFE_HTML.search(line):
            problems.append(f"{name}:{number}: innerHTML (use textContent or createElement)")
    return problems


def test_the_scanners_see_the_files():
    assert len(_templates()) > 20
    assert {p.name for p in _scripts()} >= {"run.js", "experiment_form.js"}


def test_templates_have_no_inline_styles_or_scripts():
    problems = [p for path in _templates() for p in template_problems(path)]
    assert not problems, "\n".join(problems)


def test_static_javascript_has_no_api_paths_or_inner_html():
    problems = [p for path in _scripts() for p in script_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_scanners_catch_what_they_look_for(tmp_path):
    template = tmp_path / "t.html"
    template.write_text(
        '<p>\n<div class="a"\n  style="color:red">x</div>\n<script>alert(1)</script>\n'
        '<script src="/static/a.js"></script>\n<script type="application/json">{}</script>\n'
        '<button onclick="go()">go</button>\n<a href="/api/docs">docs</a>\n'
    )
    found = template_problems(template, tmp_path)
    assert found == [
        "t.html:2: style= attribute",
        "t.html:7: inline event handler",
        "t.html:8: hard-coded /api/ path (use {% url %})",
        "t.html:4: <script> with a body",
    ]
    script = tmp_path / "a.js"
    script.write_text('ok();\nfetch("/api/runs/1");\nlog.innerHTML = text;\n')
    assert script_problems(script, tmp_path) == [
        "a.js:2: hard-coded /api/ path (render it with {% url %})",
        "a.js:3: innerHTML (use textContent or createElement)",
    ]

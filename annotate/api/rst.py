"""The reStructuredText of our docstrings and help texts as safe HTML, for the API's docs page.

The subset our docstrings use: paragraphs, bullet lists (``-``, ``*`` or ``+``, nested by
indentation), literal blocks after ``::``, inline literals (double backticks), roles such as
``:func:`name``` (shown as code, the way Sphinx shows them), interpreted text in single
backticks (OpenAPI's Markdown uses those for code too), ``**strong**`` and ``*emphasis*``.
Everything else is text and is escaped: nothing in a description reaches the page as markup.
"""

from __future__ import annotations

import re
import textwrap

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

BULLET = re.compile(r"^(?P<indent> *)(?P<mark>[-*+]) +(?P<text>\S.*)$")
INLINE = re.compile(
    r"``(?P<literal>[^`]+?)``"
    r"|:(?P<role>[A-Za-z][\w.+:-]*):`(?P<role_text>[^`]+)`"
    r"|`(?P<interpreted>[^`]+)`_{0,2}"
    r"|\*\*(?P<strong>[^*\s](?:[^*]*[^*\s])?)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"
)
#: ``title <target>`` inside a role or a link: the title is what a reader sees.
TITLED = re.compile(r"^(?P<title>.+?)\s*<[^<>]+>$", re.DOTALL)


def _role_text(text: str) -> str:
    titled = TITLED.match(text)
    if titled:
        return titled["title"]
    # :func:`~pkg.module.name` shows only ``name``; a leading ! turns the link off.
    text = text.lstrip("!")
    return text.rsplit(".", 1)[-1] if text.startswith("~") else text


def inline_html(text: str) -> str:
    """One paragraph's text with its inline markup as HTML, every other character escaped."""
    parts: list[str] = []
    end = 0
    for match in INLINE.finditer(text):
        parts.append(escape(text[end : match.start()]))
        end = match.end()
        if match["literal"] is not None:
            parts.append(f"<code>{escape(match['literal'])}</code>")
        elif match["role"] is not None:
            parts.append(f"<code>{escape(_role_text(match['role_text']).lstrip('~'))}</code>")
        elif match["interpreted"] is not None:
            parts.append(f"<code>{escape(_role_text(match['interpreted']))}</code>")
        elif match["strong"] is not None:
            parts.append(f"<strong>{escape(match['strong'])}</strong>")
        else:
            parts.append(f"<em>{escape(match['em'])}</em>")
    parts.append(escape(text[end:]))
    return "".join(parts)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _paragraph(lines: list[str]) -> tuple[str, bool]:
    """A paragraph's HTML, and whether a literal block follows it (it ended with ``::``)."""
    text = "\n".join(line.strip() for line in lines)
    if not text.endswith("::"):
        return f"<p>{inline_html(text)}</p>", False
    text = text[:-2].rstrip()
    # "Paragraph::" reads "Paragraph:"; "Paragraph ::" and a lone "::" leave no colon.
    if text and not lines[-1].rstrip()[:-2].endswith((" ", "\t")):
        text += ":"
    return (f"<p>{inline_html(text)}</p>" if text else ""), True


def _blocks(lines: list[str]) -> list[str]:
    html: list[str] = []
    paragraph: list[str] = []
    literal_next = False
    i = 0

    def flush() -> None:
        nonlocal literal_next
        if paragraph:
            block, literal_next = _paragraph(paragraph)
            if block:
                html.append(block)
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
            continue
        if literal_next and not paragraph and _indent(line) > 0:
            # The literal block: every following line that is blank or indented.
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > 0):
                block.append(lines[i])
                i += 1
            body = textwrap.dedent("\n".join(block)).strip()
            html.append(f"<pre>{escape(body)}</pre>")
            literal_next = False
            continue
        literal_next = False
        if BULLET.match(line):
            flush()
            items, i = _bullet_list(lines, i)
            html.append("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>")
            continue
        paragraph.append(line)
        i += 1
    flush()
    return html


def _next_text_line(lines: list[str], i: int) -> str:
    return next((line for line in lines[i:] if line.strip()), "")


def _bullet_list(lines: list[str], i: int) -> tuple[list[str], int]:
    """The items of the bullet list starting at line ``i`` (as HTML), and the line after it.

    An item goes on over lines indented deeper than its bullet, blank lines included when the
    next text is indented too; the next bullet of the same kind at the same indentation starts
    the next item (another kind starts another list, as in reStructuredText).
    """
    indent, mark = _indent(lines[i]), lines[i].lstrip(" ")[0]
    items: list[str] = []

    def same_list(line: str) -> bool:
        bullet = BULLET.match(line)
        return bullet is not None and _indent(line) == indent and bullet["mark"] == mark

    while i < len(lines) and same_list(lines[i]):
        bullet = BULLET.match(lines[i])
        assert bullet is not None
        first, rest = bullet["text"], []
        i += 1
        while i < len(lines) and _indent(_next_text_line(lines, i)) > indent:
            rest.append(lines[i])
            i += 1
        text = "\n".join([first, *textwrap.dedent("\n".join(rest)).split("\n")])
        items.append(rst_html(text, compact=True))  # a one-paragraph item needs no <p>
        while i < len(lines) and not lines[i].strip():
            if not same_list(_next_text_line(lines, i)):
                break
            i += 1
    return items, i


def rst_html(text: str, *, compact: bool = False) -> SafeString:
    """``text`` (a docstring or a help text, reStructuredText) as safe HTML.

    ``compact``: a text of one paragraph comes without its ``<p>``, to sit inside a line.
    """
    lines = textwrap.dedent(text.expandtabs(4).strip("\n")).split("\n")
    blocks = _blocks(lines)
    if compact and len(blocks) == 1 and blocks[0].startswith("<p>"):
        blocks = [blocks[0][3:-4]]
    return mark_safe("\n".join(blocks))  # every piece was escaped on the way in

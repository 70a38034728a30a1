"""Mail templates (Jinja2, sandboxed) for auto-replies, notifications, campaigns and surveys.

Layout under the template root: ``<family>/<name>/<variant>.txt`` holds a ``Subject: ...``
line, an empty line and the plain-text body; an optional ``<variant>.html`` beside it is the
HTML alternative of the body. Files and directories starting with ``_`` are partials for
``{% include %}`` and are never selected themselves.

For department d, urgency u and language l (each may be unknown) the variants are tried in
this order, skipping those with an unknown part: ``d.u.l``, ``d.l``, ``u.l``, ``l``, ``d.u``,
``d``, ``u``, ``default``. The first variant with a ``.txt`` file wins and only that variant's
``.html`` is used, so the two parts of one mail always come from the same variant. Language
variants come first because a reply in the customer's language matters more than one tuned to
the department; a language without any variant falls through to the language-less ones. A
language tag with a region (``zh-CN``) selects by its primary language (``zh``).

Templates are admin-edited data, so they run in Jinja's immutable sandbox with strict
undefined variables; the subject is collapsed to one line so that no value can add a header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateError

__all__ = [
    "FAMILIES",
    "PLAIN_NAME",
    "VARIANT_NAME",
    "Rendered",
    "TemplateStore",
    "variant_chain",
]

logger = logging.getLogger(__name__)

FAMILIES = ("replies", "notifications", "campaigns", "surveys")
SUBJECT_MAX_CHARS = 200

# A template or selector name; a variant is one to three of them joined by dots.
PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*){0,2}\Z")
_SUBJECT_LINE = re.compile(r"subject:[ \t]*", re.IGNORECASE)
# Every whitespace and control character, CR and LF included: a subject is one header line.
_SUBJECT_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_BLANK_RUNS = re.compile(r"\n{3,}")

Fingerprint = frozenset[tuple[str, int, int]]


@dataclass(frozen=True)
class Rendered:
    """One rendered mail: a safe one-line subject, the text body and the optional HTML body."""

    subject: str
    text: str
    html: str | None
    variant: str


@dataclass(frozen=True)
class _Part:
    """One compiled template part and the variables it reads."""

    path: str
    template: jinja2.Template
    variables: frozenset[str]


@dataclass(frozen=True)
class _Compiled:
    """The compiled parts of one variant."""

    path: str
    subject: _Part
    body: _Part
    html: _Part | None

    @property
    def variables(self) -> frozenset[str]:
        """Return every top-level variable any part reads."""
        found = self.subject.variables | self.body.variables
        return found | self.html.variables if self.html else found


def _selector(value: str | None, kind: str) -> str | None:
    """Return a lower-cased variant part, or None for an unknown or unusable value."""
    if not value:
        return None
    part = value.strip().lower()
    if kind == "language":  # zh-CN and zh_Hans select by their primary language, zh
        part = part.replace("_", "-").split("-", 1)[0]
    if PLAIN_NAME.match(part):
        return part
    logger.warning("template %s %r is not a plain name; ignored for variant selection", kind, value)
    return None


def variant_chain(
    department: str | None = None, urgency: str | None = None, language: str | None = None
) -> tuple[str, ...]:
    """Return the variant names to try, most specific first, ending with `default`."""
    d = _selector(department, "department")
    u = _selector(urgency, "urgency")
    lang = _selector(language, "language")
    candidates = ((d, u, lang), (d, lang), (u, lang), (lang,), (d, u), (d,), (u,))
    names = [".".join(p for p in c if p) for c in candidates if all(c)]
    return tuple(dict.fromkeys([*names, "default"]))


def fingerprint(root: Path) -> Fingerprint:
    """Return (relative path, mtime, size) of every file below `root`."""
    found: set[tuple[str, int, int]] = set()
    for path in root.rglob("*"):
        try:
            if path.is_file():
                stat = path.stat()
                found.add((path.relative_to(root).as_posix(), stat.st_mtime_ns, stat.st_size))
        except OSError:  # removed while we looked: the next look sees the change
            continue
    return frozenset(found)


def _clean_subject(raw: str) -> str:
    """Return the subject as one stripped line of at most SUBJECT_MAX_CHARS characters."""
    subject = _SUBJECT_SPACE.sub(" ", raw).strip()
    if len(subject) > SUBJECT_MAX_CHARS:
        subject = subject[: SUBJECT_MAX_CHARS - 1].rstrip() + "…"
    return subject


def _clean_text(raw: str) -> str:
    """Return text with LF line ends, no trailing spaces, no blank-line runs, one final LF."""
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    text = _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in lines)).strip("\n")
    return text + "\n" if text else ""


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """Return the innermost template line of `filename` in the traceback of `exc`."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class TemplateStore:
    """The templates below one root directory, compiled once and reloaded on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._loader = jinja2.FileSystemLoader(root, encoding="utf-8")
        self._env = self._environment()
        self._compiled: dict[str, _Compiled] = {}
        self._listings: dict[tuple[str, str], frozenset[str]] = {}
        self._fingerprint = fingerprint(root)

    def _environment(self) -> ImmutableSandboxedEnvironment:
        """Return a fresh sandbox: strict undefined, autoescape for .html, no auto reload."""
        return ImmutableSandboxedEnvironment(
            loader=self._loader,
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )

    def changed(self) -> bool:
        """Return whether any file below the root was added, removed or edited since loading."""
        return fingerprint(self.root) != self._fingerprint

    def reload(self) -> None:
        """Forget every compiled template and directory listing; the next render reads anew."""
        self._fingerprint = fingerprint(self.root)
        self._env = self._environment()
        self._compiled.clear()
        self._listings.clear()
        logger.info("templates below %s reloaded", self.root)

    def files(self, family: str, name: str) -> frozenset[str]:
        """Return the file names in one template directory (cached until `reload`)."""
        key = (self._checked(family, "family"), self._checked(name, "name"))
        listing = self._listings.get(key)
        if listing is None:
            directory = self.root / family / name
            try:
                listing = frozenset(p.name for p in directory.iterdir() if p.is_file())
            except OSError:
                listing = frozenset()
            self._listings[key] = listing
        return listing

    def exists(self, family: str, name: str) -> bool:
        """Return whether the template has a default.txt, so that every message finds a variant."""
        try:
            return "default.txt" in self.files(family, name)
        except TemplateError:
            return False

    def _checked(self, value: str, kind: str) -> str:
        """Return a family or template name, refusing anything that is not a plain name."""
        if (kind == "family" and value not in FAMILIES) or not PLAIN_NAME.match(value):
            raise TemplateError(f"{self.root / value}: no template {kind} {value!r}")
        return value

    def select(
        self,
        family: str,
        name: str,
        *,
        department: str | None = None,
        urgency: str | None = None,
        language: str | None = None,
    ) -> str:
        """Return the variant that `render` would use for these selectors."""
        files = self.files(family, name)
        chain = variant_chain(department, urgency, language)
        for variant in chain:
            if f"{variant}.txt" in files:
                return variant
        tried = ", ".join(f"{variant}.txt" for variant in chain)
        raise TemplateError(f"{self.root / family / name}: no template among {tried}")

    def render(
        self,
        family: str,
        name: str,
        context: Mapping[str, object],
        *,
        department: str | None = None,
        urgency: str | None = None,
        language: str | None = None,
    ) -> Rendered:
        """Render the best variant of a template for these selectors."""
        variant = self.select(
            family, name, department=department, urgency=urgency, language=language
        )
        return self.render_variant(family, name, variant, context)

    def render_variant(
        self, family: str, name: str, variant: str, context: Mapping[str, object]
    ) -> Rendered:
        """Render one named variant of a template."""
        compiled = self._load(family, name, variant)
        values = dict(context)
        subject = _clean_subject(self._run(compiled.subject, values))
        text = _clean_text(self._run(compiled.body, values))
        html = None
        if compiled.html is not None:
            html = self._run(compiled.html, values).replace("\r\n", "\n").replace("\r", "\n")
        return Rendered(subject=subject, text=text, html=html, variant=compiled.path)

    def variables(self, family: str, name: str, variant: str) -> frozenset[str]:
        """Return the top-level variables a variant reads (its subject, text and HTML)."""
        return self._load(family, name, variant).variables

    def _load(self, family: str, name: str, variant: str) -> _Compiled:
        """Return the compiled variant, compiling it on first use."""
        files = self.files(family, name)
        path = f"{family}/{name}/{variant}.txt"
        compiled = self._compiled.get(path)
        if compiled is not None:
            return compiled
        if not VARIANT_NAME.match(variant) or f"{variant}.txt" not in files:
            raise TemplateError(f"{self.root / path}: no such template")
        source = self._source(path)
        first, _, rest = source.removeprefix("\ufeff").partition("\n")
        found = _SUBJECT_LINE.match(first)
        if found is None:
            raise TemplateError(f"{self.root / path}:1: the first line must be 'Subject: ...'")
        blank, _, body = rest.partition("\n")
        if blank.strip():
            raise TemplateError(f"{self.root / path}:2: an empty line must follow the subject")
        html_path = f"{family}/{name}/{variant}.html"
        compiled = _Compiled(
            path=path,
            subject=self._compile(first[found.end() :].rstrip("\r"), path),
            # two blank lines in place of subject and separator keep the line numbers right
            body=self._compile("\n\n" + body, path),
            html=(
                self._compile(self._source(html_path), html_path)
                if f"{variant}.html" in files
                else None
            ),
        )
        self._compiled[path] = compiled
        return compiled

    def _source(self, path: str) -> str:
        """Return the text of one template file."""
        try:
            source, _, _ = self._loader.get_source(self._env, path)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{self.root / path}: no such template") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{self.root / path}: cannot read: {exc}") from exc
        return source

    def _compile(self, source: str, path: str) -> _Part:
        """Parse and compile one template part, naming the file and line on syntax errors."""
        try:
            tree = self._env.parse(source, path, path)
            variables = frozenset(meta.find_undeclared_variables(tree))
            code = self._env.compile(tree, path, path)
        except jinja2.TemplateSyntaxError as exc:
            where = self.root / (exc.name or path)
            raise TemplateError(f"{where}:{exc.lineno}: syntax error: {exc.message}") from exc
        template = self._env.template_class.from_code(self._env, code, self._env.make_globals(None))
        return _Part(path=path, template=template, variables=variables)

    def _run(self, part: _Part, values: dict[str, object]) -> str:
        """Render one part; any failure becomes a TemplateError naming the file and line."""
        try:
            return part.template.render(values)
        except jinja2.TemplateSyntaxError as exc:  # in an included partial
            where = self.root / (exc.name or part.path)
            raise TemplateError(f"{where}:{exc.lineno}: syntax error: {exc.message}") from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{self.root / part.path}: no template {exc.name!r}") from exc
        except Exception as exc:  # templates are admin data: any failure is theirs to fix
            line = _template_line(exc, part.path)
            where = self.root / part.path
            located = f"{where}:{line}" if line else str(where)
            kind = "undefined" if isinstance(exc, jinja2.UndefinedError) else type(exc).__name__
            raise TemplateError(f"{located}: {kind}: {exc}") from exc

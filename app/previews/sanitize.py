"""Rewrite an Office Open XML package (PPTX, DOCX, XLSX, ...) so that nothing in it makes its reader fetch anything.

Issue 19: LibreOffice 7.4 sent OPTIONS, HEAD and GET to `http://127.0.0.1:PORT/x.png` for a PPTX or DOCX picture
linked with `r:link` to a relationship whose `TargetMode="External"`, and drew the answer (and `file:///` PNG and
SVG targets) into the preview that member keys may read: a server-side request forgery and a local file read.
Before LibreOffice opens a file, the copy it gets is rewritten here (zipfile + lxml, on a package that passed the
same zip-bomb and element limits as ingest, ingest.loaders.sniff / ingest.loaders.limits):

- relationships: every external one (TargetMode="External", or a Target that is an absolute URI, `//host` or a
  `\\\\share` path, which an importer may follow whatever the mode says) is removed, except hyperlinks
  (`.../relationships/hyperlink`), which are links a reader clicks, never fetched while drawing;
- references to them: an attribute in the relationships namespace (`r:link`, `r:embed`, `r:id`, `r:href`,
  `r:pict`, ...) or VML's `o:relid` naming a removed relationship is dropped, and so is one naming a kept
  hyperlink from anything but a hyperlink element (a picture's `r:link` pointed at a "hyperlink" relationship
  would otherwise be fetched as the picture). Elements whose only job is the link go entirely: `w:attachedTemplate`,
  `w:subDoc`, and every `w:altChunk` (its part is HTML, MHT, RTF or another document that may link out again);
- VML `src`/`href` attributes holding a URL or a path (`v:imagedata src="http://..."`) are dropped;
- Word fields that read other files or programs, INCLUDEPICTURE, INCLUDETEXT, INCLUDE, IMPORT, LINK, DDE,
  DDEAUTO, RD and DATABASE: a simple field (`w:fldSimple`) is replaced by its cached result, a complex one
  (`w:fldChar` begin / `w:instrText` ... / separate / end) loses its field characters and instruction text, so its
  cached result stays as plain content. HYPERLINK and the other fields stay;
- embedded OOXML packages (an `.xlsx` chart workbook, a `.docx` object) are rewritten the same way, two levels deep.

Everything else is copied byte for byte (parts with nothing to change are not re-serialised), so the package
stays what its application wrote and the slide or page still converts. A part that is not well-formed XML fails
the rewrite (closed: LibreOffice is not run on what could not be checked).
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ingest.errors import IngestError
from ingest.loaders.limits import check_office_elements
from ingest.loaders.sniff import check_zip

R_NAMESPACES = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships",
                "http://purl.oclc.org/ooxml/officeDocument/relationships")
PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
W_STRICT = "http://purl.oclc.org/ooxml/wordprocessingml/main"
VML = "urn:schemas-microsoft-com:vml"
OFFICE = "urn:schemas-microsoft-com:office:office"
HYPERLINK_ELEMENTS = {"hlinkClick", "hlinkHover", "hlinkMouseOver", "hyperlink"}
LINK_ONLY_ELEMENTS = {"attachedTemplate", "subDoc"}
DANGEROUS_FIELDS = {"INCLUDEPICTURE", "INCLUDETEXT", "INCLUDE", "IMPORT", "LINK", "DDE", "DDEAUTO", "RD",
                    "DATABASE"}
NESTED_PACKAGES = (".docx", ".docm", ".dotx", ".pptx", ".pptm", ".potx", ".ppsx", ".xlsx", ".xlsm", ".xltx")
MAX_DEPTH = 2
_URI = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.\-]*:|//|\\\\)")
_FIELD_NAME = re.compile(r"^\s*\\?([A-Za-z]+)")


class UnsafePackage(IngestError):
    """The package could not be checked (not a zip, over a limit, a part that is not XML): it is not converted."""


@dataclass
class Neutralised:
    """What the rewrite took out (tests, logs)."""

    relationships: list[str] = field(default_factory=list)  # "part: Type -> Target"
    attributes: int = 0
    elements: int = 0
    fields: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.relationships or self.attributes or self.elements or self.fields)


def _parser() -> Any:
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False,
                           load_dtd=False)


def _source_of(rels_name: str) -> str:
    """`word/_rels/document.xml.rels` -> `word/document.xml`; `_rels/.rels` -> `` (the package)."""
    p = PurePosixPath(rels_name)
    source = p.parent.parent / p.name[: -len(".rels")]
    return "" if source.name == "" else source.as_posix().lower()  # OPC part names are case-insensitive


def _is_external(rel: Any) -> bool:
    mode = (rel.get("TargetMode") or "").strip().lower()
    return mode == "external" or bool(_URI.match(rel.get("Target") or ""))


def neutralise(src: bytes, *, kind: str, max_unpacked_bytes: int, depth: int = 0,
               report: Neutralised | None = None) -> tuple[bytes, Neutralised]:
    """The package `src` with every external reference taken out (see the module docstring); `kind` is pptx,
    docx or another OOXML type (for the element limits: pptx and docx parts have their own). Raises
    UnsafePackage."""
    report = report if report is not None else Neutralised()
    try:
        check_zip(src, max_unpacked_bytes=max_unpacked_bytes, required="[Content_Types].xml")
        with zipfile.ZipFile(io.BytesIO(src)) as zf:
            check_office_elements(zf, kind)
    except IngestError as exc:
        raise UnsafePackage(f"the package was not checked for external links: {exc}") from exc
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise UnsafePackage("the package has two parts with the same name; it was not converted")
        external: dict[str, dict[str, bool]] = {}  # source part -> {rId: is a hyperlink}
        rewritten: dict[str, bytes] = {}
        for info in infos:
            if info.filename.endswith(".rels"):
                data = zf.read(info)
                removed = _rewrite_rels(info.filename, data, external, report)
                if removed is not None:
                    rewritten[info.filename] = removed
        for info in infos:
            name = info.filename
            if name in rewritten:
                _write(dst, info, rewritten[name])
            elif name.lower().endswith((".xml", ".vml")) and not name.endswith(".rels"):
                data = zf.read(info)
                new = _rewrite_part(name, data, external.get(name.lower(), {}), report)
                _write(dst, info, data if new is None else new)
            elif depth < MAX_DEPTH and name.lower().endswith(NESTED_PACKAGES):
                data = zf.read(info)
                if zipfile.is_zipfile(io.BytesIO(data)):
                    inner = PurePosixPath(name).suffix.lower().lstrip(".")
                    data, _ = neutralise(data, kind=inner[:4], max_unpacked_bytes=max_unpacked_bytes,
                                         depth=depth + 1, report=report)
                _write(dst, info, data)
            else:
                with zf.open(info) as fh, dst.open(_copy_info(info), "w") as w:
                    shutil.copyfileobj(fh, w, 2**20)
    return out.getvalue(), report


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    new.compress_type = zipfile.ZIP_DEFLATED if info.compress_type != zipfile.ZIP_STORED else zipfile.ZIP_STORED
    new.external_attr = info.external_attr
    return new


def _write(dst: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
    dst.writestr(_copy_info(info), data)


def _parse(name: str, data: bytes) -> Any:
    from lxml import etree

    try:
        return etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafePackage(f"the part {name} is not well-formed XML ({exc}); it was not converted") from exc


def _serialise(root: Any) -> bytes:
    from lxml import etree

    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True))


def _rewrite_rels(name: str, data: bytes, external: dict[str, dict[str, bool]],
                  report: Neutralised) -> bytes | None:
    """Note the external relationships of the part; remove all but hyperlinks. The new bytes, or None."""
    root = _parse(name, data)
    source = _source_of(name)
    ids = external.setdefault(source, {})
    changed = False
    for rel in list(root.iter(f"{{{PKG_RELS}}}Relationship", "Relationship")):
        if not _is_external(rel):
            continue
        kind = rel.get("Type") or ""
        hyperlink = kind.rstrip("/").endswith("/hyperlink")
        ids[rel.get("Id") or ""] = hyperlink
        if not hyperlink:
            report.relationships.append(f"{source or '(package)'}: {kind.rsplit('/', 1)[-1]} -> "
                                        f"{rel.get('Target')}")
            rel.getparent().remove(rel)
            changed = True
    return _serialise(root) if changed else None


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _ns(tag: Any) -> str:
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _rewrite_part(name: str, data: bytes, external: dict[str, bool], report: Neutralised) -> bytes | None:
    """Drop references to external relationships, linking VML attributes and linking fields; None: unchanged."""
    lowered = data.lower()
    if not external and b"instr" not in lowered and VML.encode() not in data:
        return None  # nothing here can refer out: not parsed, copied as it is
    root = _parse(name, data)
    before = (report.attributes, report.elements, len(report.fields))
    if external:
        _drop_references(root, external, report)
    if VML.encode() in data:
        _drop_vml_sources(root, report)
    if b"instr" in lowered:
        _drop_fields(root, report)
    if (report.attributes, report.elements, len(report.fields)) == before:
        return None
    return _serialise(root)


def _drop_references(root: Any, external: dict[str, bool], report: Neutralised) -> None:
    doomed = []
    for el in root.iter("*"):
        local = _local(el.tag)
        for attr, value in list(el.attrib.items()):
            if not ((_ns(attr) in R_NAMESPACES) or attr == f"{{{OFFICE}}}relid"):
                continue
            if value not in external:
                continue
            if external[value] and local in HYPERLINK_ELEMENTS:
                continue  # a hyperlink: kept, never fetched while drawing
            del el.attrib[attr]
            report.attributes += 1
            if local in LINK_ONLY_ELEMENTS or local == "altChunk":
                doomed.append(el)
        if local == "altChunk" and _ns(el.tag) in (W, W_STRICT) and el not in doomed:
            doomed.append(el)
    for el in doomed:
        if el.getparent() is not None:
            el.getparent().remove(el)
            report.elements += 1


def _drop_vml_sources(root: Any, report: Neutralised) -> None:
    for el in root.iter("*"):
        if _ns(el.tag) != VML:
            continue
        for attr, value in list(el.attrib.items()):
            if _local(attr) in ("src", "href") and (_URI.match(value) or value.strip().startswith(("/", "\\"))):
                del el.attrib[attr]
                report.attributes += 1


def _field_name(instruction: str) -> str:
    m = _FIELD_NAME.match(instruction)
    return m.group(1).upper() if m else ""


def _drop_fields(root: Any, report: Neutralised) -> None:
    for w in (W, W_STRICT):
        for simple in list(root.iter(f"{{{w}}}fldSimple")):
            instr = simple.get(f"{{{w}}}instr") or ""
            if _field_name(instr) in DANGEROUS_FIELDS:
                parent = simple.getparent()
                at = parent.index(simple)
                for child in list(simple):
                    parent.insert(at, child)
                    at += 1
                parent.remove(simple)
                report.fields.append(instr.strip())
        _drop_complex_fields(root, w, report)


def _drop_complex_fields(root: Any, w: str, report: Neutralised) -> None:
    """begin / instrText... / separate / result / end, nested: a linking field loses all but its result."""
    doomed: list[Any] = []
    stack: list[tuple[Any, list[Any], list[Any]]] = []  # (begin, instruction elements, separate and end)
    closed: list[tuple[Any, list[Any], list[Any]]] = []
    for el in root.iter(f"{{{w}}}fldChar", f"{{{w}}}instrText", f"{{{w}}}delInstrText"):
        if _local(el.tag) == "fldChar":
            kind = el.get(f"{{{w}}}fldCharType")
            if kind == "begin":
                stack.append((el, [], []))
            elif kind == "separate" and stack:
                stack[-1][2].append(el)
            elif kind == "end" and stack:
                begin, instrs, rest = stack.pop()
                closed.append((begin, instrs, [*rest, el]))
        elif stack:
            stack[-1][1].append(el)
    for begin, instrs, rest in [*closed, *stack]:  # one never closed: the rest of the part is its result
        text = "".join(i.text or "" for i in instrs)
        if _field_name(text) in DANGEROUS_FIELDS:
            doomed.extend([begin, *instrs, *rest])
            report.fields.append(text.strip())
    for el in doomed:
        if el.getparent() is not None:
            el.getparent().remove(el)
            report.elements += 1

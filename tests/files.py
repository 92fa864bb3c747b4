"""Files made for the tests: PDFs with text or scanned pages, encrypted PDFs, Word files and zip
bombs, built with the same libraries that read them (PDFium, python-docx)."""

from __future__ import annotations

import ctypes
import io
import zipfile
from pathlib import Path

import docx
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from tests.conftest import ROOT

CORPUS = ROOT.parent / "shared" / "corpus"
HTML = CORPUS / "html"
PDF = CORPUS / "pdf"
# A page given as ("scan", lines) is drawn as an image with no text layer.
PageSpec = list[str] | tuple[str, list[str]]


def _text_page(pdf: pdfium.PdfDocument, lines: list[str]) -> pdfium.PdfPage:
    page = pdf.new_page(420, 300)
    for i, line in enumerate(lines):
        obj = pdfium_c.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", 20.0)
        wide = (line + "\0").encode("utf-16-le")
        buffer = ctypes.create_string_buffer(wide, len(wide))
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 20, 260 - 30 * i)
        pdfium_c.FPDFPage_InsertObject(page.raw, obj)
    page.gen_content()
    return page


def make_pdf(pages: list[PageSpec]) -> bytes:
    pdf = pdfium.PdfDocument.new()
    for spec in pages:
        if isinstance(spec, tuple):
            scratch = pdfium.PdfDocument.new()
            bitmap = _text_page(scratch, spec[1]).render(scale=4)
            page = pdf.new_page(420, 300)
            image = pdfium.PdfImage.new(pdf)
            image.set_bitmap(bitmap)
            image.set_matrix(pdfium.PdfMatrix().scale(420, 300))
            page.insert_obj(image)
            page.gen_content()
        else:
            _text_page(pdf, spec)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    """A PDF under the standard security handler whose user password is not empty."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % at for at in offsets)
    file_id = b"<00112233445566778899aabbccddeeff>"
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [%s %s] >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        file_id,
        file_id,
        xref,
    )
    return out


def make_docx(paragraphs: list[str], title: str | None = None, table: list[list[str]] | None = None) -> bytes:
    document = docx.Document()
    if title:
        document.core_properties.title = title
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, cells in zip(grid.rows, table, strict=True):
            for cell, text in zip(row.cells, cells, strict=True):
                cell.text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb(unpacked: int) -> bytes:
    """A .docx-shaped zip whose document.xml unpacks to `unpacked` bytes of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(unpacked >> 20):
                f.write(block)
    return out.getvalue()


SCRIPTED_PAGE = b"""<!DOCTYPE html><html><head><title>News app</title>
<script src="/bundle.js"></script></head>
<body><div id="root"></div><noscript>You need to enable JavaScript to run this app.</noscript></body></html>"""


def shared(path: Path) -> bytes:
    from tests.conftest import need_shared

    return need_shared(path).read_bytes()

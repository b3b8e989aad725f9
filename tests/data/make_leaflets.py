"""Write the realistic test leaflets into a folder: the two web pages as they are, a Word file and a PDF.

The texts are our own example family-care leaflets for a made-up hospital, not copies of real ones.
The Word file and the PDF are generated (python-docx, reportlab) so that the repository holds no binaries:

    python tests/data/make_leaflets.py OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES = HERE / "leaflets"

# Page furniture of the four leaflets (menus, footers, cookie banners, running headers and footers):
# the tests check that none of it is indexed or quoted.
BOILERPLATE = [
    "cookie", "Accept all", "Privacy", "All rights reserved", "Visiting times", "Donate", "Patient leaflets",
    "Related leaflets", "Was this page helpful", "Search this website", "Contact us", "Site map", "Home >",
    "Hospital Road", "dataLayer", "Family information · Food", "Leaflet FD-207", "Page 1 of 3", "Leaflet CL-03",
    "Review date", "Family leaflet CL-03",
]

DOCX_HEADER = "Example Children's Hospital · Children's cancer ward · Family leaflet CL-03"
DOCX_FOOTER = "Leaflet CL-03 · Written by the ward nurses · Review date November 2027"
PDF_HEADER = "Example Children's Hospital · Family information · Food and drink"
PDF_FOOTER = "Leaflet FD-207 · Page {page} of {pages}"


def make_docx(path: Path) -> Path:
    """A Word leaflet: title, headings, paragraphs, a bulleted list, a table, a running header and footer."""
    import docx

    d = docx.Document()
    d.core_properties.title = "Caring for your baby's central line at home"
    d.core_properties.subject = "How to keep the central line clean and dry at home."
    section = d.sections[0]
    section.header.paragraphs[0].text = DOCX_HEADER
    section.footer.paragraphs[0].text = DOCX_FOOTER

    d.add_paragraph("Caring for your baby's central line at home", style="Title")
    d.add_paragraph(
        "This leaflet is for parents and carers. It explains how to look after your baby's central line "
        "between visits from the home care nurses."
    )
    d.add_heading("What the central line is", level=1)
    d.add_paragraph(
        "A central line is a thin, soft tube that goes into a large vein in your baby's chest. "
        "It lets the nurses give medicines and take blood tests without a new needle each time."
    )
    d.add_heading("The dressing", level=1)
    d.add_paragraph(
        "The clear dressing over the line is changed once a week by a nurse, at home or on the day unit. "
        "If the dressing gets wet, loose or dirty, ask for it to be changed the same day."
    )
    d.add_heading("Keeping the dressing dry", level=2)
    d.add_paragraph(
        "Cover the dressing with a clean, dry cloth when you feed your baby. "
        "Dress your baby in a vest that fastens between the legs so the line stays tucked in."
    )
    d.add_heading("What to keep at home", level=1)
    d.add_paragraph("Keep these things together in a clean box, away from pets and other children:")
    for item in [
        "a spare pair of line clamps from the ward",
        "sterile gauze and the small roll of tape the nurses gave you",
        "a box of disposable gloves in your baby's size of hands",
        "the contact card with the ward's numbers",
    ]:
        d.add_paragraph(item, style="List Bullet")
    d.add_paragraph("The home care nurse checks the box at each visit and fills it up again.")
    d.add_heading("Checks through the day", level=1)
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "When"
    table.rows[0].cells[1].text = "What to check"
    for when, what in [
        ("Morning", "The clamps are closed and both caps are on the ends of the line."),
        ("Nappy change", "The line is tucked inside the vest, away from the nappy."),
        ("Bedtime", "The line is taped to the chest in a loop, so a pull does not reach the skin."),
    ]:
        row = table.add_row()
        row.cells[0].text = when
        row.cells[1].text = what
    d.save(str(path))
    return path


# Each page: a list of (kind, text); kind "h" is a heading (and an outline entry), "p" a paragraph.
# "-\n" inside a paragraph forces a line break after a hyphen, as a typesetter would break a word.
PDF_PAGES: list[list[tuple[str, str]]] = [
    [
        ("title", "Food and drink during treatment"),
        ("p", "Blinatumomab and the other medicines lower your baby's defences against germs for a while. "
              "Careful food hygiene at home keeps the risk of a tummy infection low."),
        ("h", "Milk and bottles"),
        ("p", "Breast milk is the best food for your baby, and you can go on breastfeeding during treatment. "
              "Only give your baby milk and yogurt that are pasteu-\nrised. "
              "Make up each bottle of formula fresh and use it within two hours."),
        ("p", "Use tap water that has been boiled and then cooled for your baby's bottles. "
              "Bottled mineral water is not suitable for making up formula."),
        ("p", "Wash bottles, teats and breast pump parts in hot soapy water after every feed. "
              "Then sterilise them in the usual way, with a steam steriliser or in a pan of boiling water."),
    ],
    [
        ("h", "Solid food"),
        ("p", "If your baby has already started solid food, you can carry on with the foods your baby knows. "
              "Wash fruit and vegetables well under running water, and peel them when you can."),
        ("p", "Cook eggs until the white and the yolk are both firm. "
              "Cook meat and fish all the way through, until there is no pink left in the middle."),
        ("p", "Keep cooked food in the fridge and use it within one day. "
              "Reheat food only once, until it is steaming hot, and let it cool before you feed your baby."),
        ("p", "Avoid soft cheeses with a white rind, pâté and raw sprouts, because germs can grow in them "
              "even in the fridge."),
    ],
    [
        ("h", "Eating less than usual"),
        ("p", "Many babies feed less while they are on treatment, and this usually gets better between blocks. "
              "Offer small feeds more often, and keep a note of how much your baby drinks each day."),
        ("p", "The dietitian on the ward can weigh your baby and suggest a higher energy formula "
              "if your baby is losing weight."),
        ("h", "Your follow-up clinic"),
        ("p", "Bring this leaflet and your feeding notes to the follow-\nup clinic. "
              "The team will talk with you about which foods your baby can start next."),
    ],
]


def make_pdf(path: Path) -> Path:
    """A three-page PDF leaflet with a running header and footer, an outline and a hyphenated line break."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.setTitle("Food and drink during treatment")
    c.setSubject("Food hygiene for babies on treatment for leukaemia, and what to do when they eat less.")
    width, height = A4
    pages = len(PDF_PAGES)
    for number, blocks in enumerate(PDF_PAGES, 1):
        c.setFont("Helvetica", 8)
        c.drawString(50, height - 40, PDF_HEADER)
        c.drawString(50, 30, PDF_FOOTER.format(page=number, pages=pages))
        y = height - 90
        for kind, text in blocks:
            if kind in {"title", "h"}:
                key = f"h{number}-{y:.0f}"
                c.bookmarkPage(key, top=y + 20)
                c.addOutlineEntry(text, key, level=0)
                c.setFont("Helvetica-Bold", 16 if kind == "title" else 13)
                c.drawString(50, y, text)
                y -= 26
                continue
            c.setFont("Helvetica", 11)
            for part in text.split("\n"):
                for line in textwrap.wrap(part, 88):
                    c.drawString(50, y, line)
                    y -= 15
            y -= 9
        c.showPage()
    c.save()
    return path


def write_all(out: Path) -> list[Path]:
    """All four leaflets in `out` (made if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for page in sorted(PAGES.glob("*.html")):
        written.append(Path(shutil.copy(page, out / page.name)))
    written.append(make_docx(out / "central-line-care.docx"))
    written.append(make_pdf(out / "food-and-drink.pdf"))
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for p in write_all(Path(sys.argv[1])):
        print(p)

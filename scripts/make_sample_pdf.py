"""Writes examples/lectures/06-sequence-to-sequence.pdf, the sample PDF slide deck (our own text), with reportlab:
`python scripts/make_sample_pdf.py`. Kept so the deck can be regenerated or changed; the PDF is committed."""

from __future__ import annotations

from pathlib import Path

SLIDES = [
    ("Sequence to sequence", ["An encoder RNN reads the source sentence into a sequence of hidden states.",
                              "A decoder RNN writes the target sentence one token at a time,",
                              "starting from the encoder's last hidden state."]),
    ("Teacher forcing", ["During training the decoder is fed the true previous token instead of its own guess.",
                         "At test time it must feed back its own predictions: the mismatch is called exposure bias."]),
    ("Greedy decoding", ["Greedy decoding picks the most probable token at each step.",
                         "It is fast but cannot undo an early mistake."]),
    ("Beam search", ["Beam search keeps the k most probable partial translations at every decoding step.",
                     "Each hypothesis is extended by every token; the k best extensions survive.",
                     "A beam width of one is greedy decoding."]),
    ("Length normalisation", ["Longer hypotheses multiply more probabilities below one, so raw scores favour short",
                              "outputs. Dividing the log-probability by the length removes that bias."]),
    ("Measuring translations: BLEU", ["BLEU counts the n-grams a translation shares with reference translations",
                                      "(n = 1 to 4) and multiplies by a brevity penalty for short outputs."]),
]


def main() -> None:
    from reportlab.lib.pagesizes import landscape, letter
    from reportlab.pdfgen import canvas

    out = Path(__file__).resolve().parent.parent / "examples" / "lectures" / "06-sequence-to-sequence.pdf"
    c = canvas.Canvas(str(out), pagesize=landscape(letter), invariant=True)  # invariant: the same bytes each run
    c.setTitle("Lecture 6: Sequence to sequence models")
    width, height = landscape(letter)
    for title, lines in SLIDES:
        c.setFillColorRGB(0.12, 0.25, 0.5)
        c.rect(0, height - 90, width, 90, stroke=0, fill=1)
        c.setFillColorRGB(1, 1, 1)
        c.setFont("Helvetica-Bold", 30)
        c.drawString(50, height - 60, title)
        c.setFillColorRGB(0, 0, 0)
        c.setFont("Helvetica", 20)
        y = height - 150
        for line in lines:
            c.drawString(60, y, line)
            y -= 34
        c.showPage()
    c.save()
    print(out)


if __name__ == "__main__":
    main()

"""A contact sheet of a selector's candidates: the same crop of each, its score, the pick.

QC scores are numbers; whether the pick looks right is something people check by eye.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from tilemore.image import Image
from tilemore.pipeline.run import QCReport

LABEL_H = 28
PICK_COLOUR = (40, 180, 80)


def contact_sheet(original: Image, candidates: dict[str, Image], qc: QCReport,
                  cell: int = 384) -> PILImage.Image:
    """One row: the stage input, then every candidate, best score first; the same centre
    crop of each, shown at 1:1 so noise and smoothing are visible."""
    names = sorted(candidates, key=lambda n: -qc.scores[n])
    panels = [("input", original, None)] + [(n, candidates[n], qc.scores[n]) for n in names]
    w = min(cell, original.width)
    h = min(cell, original.height)
    x0, y0 = (original.width - w) // 2, (original.height - h) // 2
    sheet = PILImage.new("RGB", (len(panels) * (w + 8) + 8, h + LABEL_H + 16), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for i, (name, img, score) in enumerate(panels):
        crop = np.ascontiguousarray(img.rgb()[y0:y0 + h, x0:x0 + w])
        x = 8 + i * (w + 8)
        sheet.paste(PILImage.fromarray(crop), (x, 8 + LABEL_H))
        picked = name == qc.pick
        label = name if score is None else f"{name}  {score:.3f}" + ("  (picked)" if picked
                                                                   else "")
        draw.text((x, 8), label, fill=PICK_COLOUR if picked else (230, 230, 230), font=font)
        if picked:
            draw.rectangle((x - 3, 8 + LABEL_H - 3, x + w + 2, 8 + LABEL_H + h + 2),
                           outline=PICK_COLOUR, width=3)
    return sheet

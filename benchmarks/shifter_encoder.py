"""Shifter + encoder: decode, resize to fit 1600 px wide and encode JPEG q85, for a 12 MP
JPEG, with Tilemore's operators versus pyvips (libvips's thumbnail + jpegsave) in one run.

Target: Tilemore ≤ 1.3× pyvips. Both sides decode at reduced JPEG scale (libvips's
shrink-on-load; our decoder's size hint, which the graph builder sets for this pipeline).

    pip install -e '.[bench]'; python benchmarks/shifter_encoder.py [--repeat 15] [--size 4000x3000]
    python benchmarks/shifter_encoder.py --smoke   # 2000×1500, one run each: seconds
"""

from __future__ import annotations

import io

import pyvips
from _common import arguments, finish, machine, median_time, parse, photo_jpeg, positive
from PIL import Image as PILImage
from tilemore_operators.encoder import encode_image
from tilemore_operators.shifter import Shifter

from tilemore.catalog import Catalog
from tilemore.decoding import decode_image
from tilemore.pipeline import build_graph

ADJUSTMENTS = {"shifter": {"resize": {"width": 1600, "mode": "fit"}}, "encoder": {"quality": 85}}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--size", default="4000x3000", help="the input JPEG, WIDTHxHEIGHT")
    args = parse(ap, repeat=1, size="2000x1500")
    width, height = (int(v) for v in args.size.split("x"))
    data = photo_jpeg(width, height)
    graph = build_graph(Catalog.load().pipeline("thumbnail"), ADJUSTMENTS, "jpeg")
    decode_p, shift_p, enc_p = (graph.task(n).params for n in ("decode", "shifter", "encoder"))
    shifter = Shifter()

    def tilemore() -> bytes:
        image = decode_image(data, 10**9, decode_p.size_hint)
        return encode_image(shifter.process(shift_p, image), enc_p).data

    def vips() -> bytes:
        return pyvips.Image.thumbnail_buffer(data, 1600).jpegsave_buffer(Q=85)

    ours, theirs = tilemore(), vips()  # warm-up
    t_ours, _ = median_time(tilemore, args.repeat)
    t_vips, _ = median_time(vips, args.repeat)
    ratio = t_ours / t_vips
    result = {"machine": machine(), "size": args.size, "repeat": args.repeat, "tilemore_s": t_ours,
              "pyvips_s": t_vips, "ratio": ratio, "target": 1.3,
              "size_hint": list(decode_p.size_hint or ()), "tilemore_bytes": len(ours),
              "pyvips_bytes": len(theirs), "libvips": pyvips.version(0) * 100 + pyvips.version(1)}
    print(f"{width * height / 1e6:g} MP JPEG → fit 1600 px → JPEG q85 on {machine()}")
    print(f"  tilemore operators: {t_ours * 1000:.1f} ms ({len(ours):,} bytes)")
    print(f"  pyvips {pyvips.version(0)}.{pyvips.version(1)}:        {t_vips * 1000:.1f} ms "
          f"({len(theirs):,} bytes)")
    print(f"  ratio {ratio:.3f} (target ≤ 1.3): {'met' if ratio <= 1.3 else 'NOT met'}")
    sizes = [PILImage.open(io.BytesIO(b)).size for b in (ours, theirs)]
    finish("shifter_encoder", args, result, {
        "times and ratio are finite and positive": positive(t_ours, t_vips, ratio),
        f"both outputs are 1600 px wide JPEGs, not {sizes}": all(w == 1600 for w, _ in sizes)})


if __name__ == "__main__":
    main()

"""Draws the app icon with Pillow and writes every size the platforms need (run after changing the design).

PNGs go into the package (`immich_ml_desktop/resources/icons/`, found at run time by `app_resources.icon_path`);
the Windows `.ico` and macOS `.icns` go next to this script, where only the installers use them.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
PACKAGE_ICONS = HERE.parent / "immich_ml_desktop" / "resources" / "icons"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)  # freedesktop hicolor sizes; the window picks from these
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # Explorer, taskbar, Start menu
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)  # Finder, Dock (Retina)
CANVAS = 1024

# Immich's brand colours, so the icon reads as "Immich" next to the web app's favicon.
PETALS = ("#fa2921", "#ed79b5", "#ffb400", "#1e83f7", "#18c249")
BACKGROUND_TOP = (24, 32, 56)
BACKGROUND_BOTTOM = (44, 62, 110)


def draw(size: int = CANVAS) -> Image.Image:
    """The master artwork: a dark rounded tile, five Immich petals, and a face-detection frame over them."""
    scale = 4  # draw large, then downsample: Pillow's shapes have no anti-aliasing of their own
    s = size * scale
    gradient = Image.linear_gradient("L").resize((s, s))
    tile = Image.composite(Image.new("RGB", (s, s), BACKGROUND_BOTTOM), Image.new("RGB", (s, s), BACKGROUND_TOP), gradient)
    mask = Image.new("L", (s, s), 0)
    margin = s * 0.04
    ImageDraw.Draw(mask).rounded_rectangle((margin, margin, s - margin, s - margin), radius=s * 0.2, fill=255)
    icon = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    icon.paste(tile, (0, 0), mask)

    d = ImageDraw.Draw(icon)
    c = s / 2
    r = s * 0.17  # petal radius
    offset = s * 0.13
    for i, colour in enumerate(PETALS):
        # five overlapping discs around the centre, like Immich's flower
        a = -math.pi / 2 + i * 2 * math.pi / len(PETALS)
        x, y = c + offset * math.cos(a), c + offset * math.sin(a)
        d.ellipse((x - r, y - r, x + r, y + r), fill=colour + "e6")

    # the face-detection frame: four white corner brackets
    w = s * 0.035
    lo, hi = s * 0.2, s * 0.8
    arm = s * 0.14
    for x0, y0, dx, dy in ((lo, lo, 1, 1), (hi, lo, -1, 1), (lo, hi, 1, -1), (hi, hi, -1, -1)):
        d.line((x0, y0, x0 + dx * arm, y0), fill="white", width=int(w))
        d.line((x0, y0, x0, y0 + dy * arm), fill="white", width=int(w))
        d.ellipse((x0 - w / 2, y0 - w / 2, x0 + w / 2, y0 + w / 2), fill="white")
    return icon.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    master = draw()
    PACKAGE_ICONS.mkdir(parents=True, exist_ok=True)
    for size in PNG_SIZES:
        master.resize((size, size), Image.Resampling.LANCZOS).save(PACKAGE_ICONS / f"immich-ml-desktop-{size}.png", optimize=True)
    master.save(HERE / "immich-ml-desktop.ico", sizes=[(n, n) for n in ICO_SIZES])
    master.save(HERE / "immich-ml-desktop.icns", sizes=[(n, n) for n in ICNS_SIZES])
    print(f"wrote {len(PNG_SIZES)} PNGs to {PACKAGE_ICONS}, .ico and .icns to {HERE}")


if __name__ == "__main__":
    main()

"""`raster._shade`'s pixels, compiled by numba (datashader's own compiler): see `labeler.ui.raster._shade`.

`counts` (height, width, colours) float64, NaN or 0 where no point of a colour falls; `palette` (colours, 3)
float64 RGB; returns RGBA uint8. Compiled on first use (about a second) and cached beside this file.
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def shade_pixels(counts, palette, min_alpha):
    height, width, colours = counts.shape
    sums = np.zeros((height + 2, width + 2, 4))       # rgb * count and count, with a margin of one pixel
    for y in range(height):
        for x in range(width):
            for c in range(colours):
                v = counts[y, x, c]
                if v > 0:                                # NaN (no point of that colour) is not
                    sums[y + 1, x + 1, 0] += v * palette[c, 0]
                    sums[y + 1, x + 1, 1] += v * palette[c, 1]
                    sums[y + 1, x + 1, 2] += v * palette[c, 2]
                    sums[y + 1, x + 1, 3] += v
    across = np.empty((height + 2, width, 4))          # the 3x3 sum in two passes: across, then down
    for y in range(height + 2):
        for x in range(width):
            for k in range(4):
                across[y, x, k] = sums[y, x, k] + sums[y, x + 1, k] + sums[y, x + 2, k]
    spread = np.empty((height, width, 4))
    low, high, drawn = np.inf, -np.inf, 0
    for y in range(height):
        for x in range(width):
            for k in range(4):
                spread[y, x, k] = across[y, x, k] + across[y + 1, x, k] + across[y + 2, x, k]
            total = spread[y, x, 3]
            if total > 0:
                drawn += 1
                low, high = min(low, total), max(high, total)
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    if drawn == 0:
        return rgba
    if high == low:                                    # np.histogram's range for equal values
        low, high = low - 0.5, high + 0.5
    bins = 256
    counted = np.zeros(bins + 1)
    for y in range(height):
        for x in range(width):
            total = spread[y, x, 3]
            if total > 0:
                counted[min(int((total - low) * bins / (high - low)), bins - 1) + 1] += 1
    for i in range(1, bins + 1):                       # the share of drawn pixels up to and including each bin
        counted[i] += counted[i - 1]
    for y in range(height):
        for x in range(width):
            total = spread[y, x, 3]
            if total > 0:
                for k in range(3):
                    rgba[y, x, k] = min(255.0, max(0.0, spread[y, x, k] / total))
                rank = counted[min(int((total - low) * bins / (high - low)), bins - 1) + 1] / drawn
                rgba[y, x, 3] = min_alpha + (255 - min_alpha) * rank
    return rgba


@numba.njit(cache=True, nogil=True)
def over_rgba(top, bottom, bottom_alpha):
    """RGBA `top` over RGBA `bottom` whose alpha is first scaled by `bottom_alpha` (the dimmed unselected points)."""
    height, width, _ = top.shape
    out = np.empty((height, width, 4), dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            a_top = top[y, x, 3] / 255.0
            a_bottom = np.float64(np.uint8(bottom[y, x, 3] * bottom_alpha)) / 255.0
            alpha = a_top + a_bottom * (1.0 - a_top)
            for k in range(3):
                value = (top[y, x, k] * a_top + bottom[y, x, k] * a_bottom * (1.0 - a_top)) / max(alpha, 1e-6)
                out[y, x, k] = np.uint8(min(255.0, round(value)))
            out[y, x, 3] = np.uint8(round(alpha * 255.0))
    return out


@numba.njit(cache=True, nogil=True)
def over_rgb(top, bottom):
    """RGBA `top` over opaque RGB `bottom`: RGB."""
    height, width, _ = top.shape
    out = np.empty((height, width, 3), dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            alpha = top[y, x, 3] / 255.0
            for k in range(3):
                out[y, x, k] = np.uint8(top[y, x, k] * alpha + bottom[y, x, k] * (1.0 - alpha))
    return out

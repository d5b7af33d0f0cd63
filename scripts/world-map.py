#!/usr/bin/env python3
"""Converts world-atlas's countries-110m.json (TopoJSON, Natural Earth 1:110m) once into the SVG
paths the workload's page draws: an equirectangular projection into a 960x480 box, coordinates
rounded to 0.1 px. Usage: scripts/world-map.py countries-110m.json > crates/conclave-workload/ui/world-110m.json
"""
import json
import sys

W, H = 960.0, 480.0


def arcs_of(topo):
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:  # delta-encoded, quantised
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        out.append(points)
    return out


def ring(arcs, indices):
    points = []
    for i in indices:
        pts = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        points.extend(pts if not points else pts[1:])
    return points


def project(lon, lat):
    return (lon + 180.0) / 360.0 * W, (90.0 - lat) / 180.0 * H


def split_at_antimeridian(pts):
    """A projected ring as the rings to draw: one crossing the antimeridian (a jump of more than
    half the map's width between two points) is cut there into pieces, each closed along the
    map's edge; one crossing it once encloses a pole (Antarctica) and is closed along the map's
    bottom or top. Otherwise the closing edge would be a stray line across the whole map."""
    jumps = [i for i in range(len(pts) - 1) if abs(pts[i + 1][0] - pts[i][0]) > W / 2]
    if not jumps:
        return [pts]
    if len(jumps) == 1:
        i = jumps[0]
        run = pts[i + 1:] + pts[1:i + 1]
        pole = H if sum(y for _, y in pts) / len(pts) > H / 2 else 0.0
        return [run + [(run[-1][0], pole), (run[0][0], pole)]]
    # Rotate so the ring starts right after a jump, then cut at every jump.
    start = jumps[0] + 1
    rotated = pts[start:] + pts[1:start]
    pieces, piece = [], [rotated[0]]
    for a, b in zip(rotated, rotated[1:]):
        if abs(b[0] - a[0]) > W / 2:
            pieces.append(piece)
            piece = []
        piece.append(b)
    pieces.append(piece)
    return [p for p in pieces if len(p) > 2]


def ring_path(pts):
    return "".join(
        "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in piece) + "Z"
        for piece in split_at_antimeridian(pts)
    )


def path(arcs, geometry):
    polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
    parts = []
    for polygon in polygons:
        for r in polygon:
            parts.append(ring_path([project(*p) for p in ring(arcs, r)]))
    return "".join(parts)


def main():
    topo = json.load(open(sys.argv[1]))
    arcs = arcs_of(topo)
    countries = []
    for g in topo["objects"]["countries"]["geometries"]:
        if g.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        countries.append({"id": g.get("id"), "name": g["properties"]["name"], "d": path(arcs, g)})
    countries.sort(key=lambda c: c["name"])
    json.dump(
        {
            "source": "world-atlas 2.0.2 countries-110m.json (Natural Earth 1:110m)",
            "width": W,
            "height": H,
            "countries": countries,
        },
        sys.stdout,
        separators=(",", ":"),
    )


if __name__ == "__main__":
    main()

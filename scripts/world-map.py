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


def path(arcs, geometry):
    polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
    parts = []
    for polygon in polygons:
        for r in polygon:
            pts = [project(*p) for p in ring(arcs, r)]
            # Rings crossing the antimeridian are drawn as they are; at 1:110m only Russia and
            # Fiji touch it, and their arcs are already split there.
            d = "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in pts) + "Z"
            parts.append(d)
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

"""Independent reference for the partner analysis, standard library only: reads the parties'
records as CSV (company = file name without extension) and prints the result JSON with the same
rules as the workload (generation cut-offs, k-suppression, ordering by count then label)."""

import csv
import json
import sys
from collections import Counter, defaultdict

GENERATIONS = [("Gen Alpha", 2013, 10**9), ("Gen Z", 1997, 2012), ("Millennials", 1981, 1996),
               ("Gen X", 1965, 1980), ("Baby Boomers", 1946, 1964), ("Silent", -10**9, 1945)]


def generation(year):
    return next(name for name, lo, hi in GENERATIONS if lo <= year <= hi)


def avg(total, count):
    return (2 * total + count) // (2 * count) if count else None


def table(groups, k, with_salary, limit=None):
    """groups: {label: (count, salary_sum)}"""
    items = sorted(((l, c, s) for l, (c, s) in groups.items() if c > 0), key=lambda x: (-x[1], x[0]))
    kept = [{"label": l, "count": c, **({"average_salary": avg(s, c)} if with_salary else {})} for l, c, s in items if c >= k]
    return {"groups": kept[:limit] if limit else kept, "suppressed_groups": sum(1 for _, c, _ in items if c < k)}


def main(k, year, paths):
    k = max(k, 1)
    companies = {}
    all_country, all_city, all_gen = defaultdict(lambda: [0, 0]), Counter(), defaultdict(lambda: [0, 0])
    for path in paths:
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        gens, eyes, colors = defaultdict(lambda: [0, 0]), Counter(), Counter()
        n = total = 0
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                age, salary = int(r["age"]), int(r["salary"])
                n += 1
                total += salary
                g = generation(year - age)
                for acc in (gens[g], all_gen[g], all_country[r["country"]]):
                    acc[0] += 1
                    acc[1] += salary
                all_city[(r["country"], r["city"])] += 1
                eyes[r["eye_color"]] += 1
                colors[r["favorite_color"]] += 1
        companies[name] = {
            "records": n,
            "average_salary": avg(total, n) if n >= k else None,
            "generations": table({g: tuple(v) for g, v in gens.items()}, k, True),
            "eye_colors": table({c: (v, 0) for c, v in eyes.items()}, k, False),
            "favorite_colors": table({c: (v, 0) for c, v in colors.items()}, k, False),
        }
    countries = table({c: tuple(v) for c, v in all_country.items()}, k, False)
    top = [{"country": g["label"], "count": g["count"],
            "top_cities": table({city: (n, 0) for (c, city), n in all_city.items() if c == g["label"]}, k, False, 3)}
           for g in countries["groups"][:10]]
    print(json.dumps({
        "k": k, "reference_year": year, "total_records": sum(c["records"] for c in companies.values()),
        "top_countries": top, "top_countries_suppressed": countries["suppressed_groups"],
        "companies": companies,
        "salary_by_country": table({c: tuple(v) for c, v in all_country.items()}, k, True),
        "salary_by_generation": table({g: tuple(v) for g, v in all_gen.items()}, k, True),
    }, sort_keys=True))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])

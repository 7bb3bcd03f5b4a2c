"""Intervals of the law's exponent b on the synthetic studies of `plc simulate-onset --law`.

    OMP_NUM_THREADS=1 python examples/law-intervals/compare.py [--seeds 0,1] [--studies 100] [--jobs 2]

The studies are drawn exactly as `plc simulate-onset --law --seed S` draws them (the same
random stream per case), so the `bootstrap` column is fit-onset's interval as that command
reports it; beside it, intervals of the same points that fit-onset does not use: the classical
OLS t interval, t intervals from the heteroscedasticity-consistent standard errors HC2 and HC3
(MacKinnon & White 1985; Long & Ervin 2000 recommend HC3 for small samples), and the larger
of the OLS and HC2 errors. Per case and interval: coverage of the true b, mean width over the
ideal (±1.96 SD of the point estimate over the studies). The censored study is left out (its
interval is the censored law's, not a fit of detected points).
"""

import argparse
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.stats import norm
from scipy.stats import t as t_dist

from plc.onset.bootstrap import bootstrap_fits
from plc.onset.calibrate import LAW_CASES, LAW_PROBES, LAW_RESAMPLES, law_study

INTERVALS = ("bootstrap", "OLS t", "HC2 t", "HC3 t", "max(OLS, HC2) t")


def errors(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """The OLS slope and its standard errors: classical, HC2, HC3."""
    X = np.c_[np.ones_like(x), x]
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    e = y - X @ beta
    h = np.einsum("ij,jk,ik->i", X, bread, X)

    def sandwich(w: np.ndarray) -> float:
        return float(np.sqrt((bread @ (X * w[:, None]).T @ X @ bread)[1, 1]))

    classical = float(np.sqrt(e @ e / (x.size - 2) * bread[1, 1]))
    return float(beta[1]), classical, sandwich(e**2 / (1 - h)), sandwich((e / (1 - h)) ** 2)


def one_case(index: int, seed: int, studies: int) -> dict[str, list]:
    case = LAW_CASES[index]
    rng = np.random.default_rng([seed, zlib.crc32(repr(case).encode())])
    out: dict[str, list] = {name: [] for name in INTERVALS}
    for k in range(studies):
        kept = [r for r in law_study(case, rng) if r.detected]
        x, y = np.log([r.n_params for r in kept]), np.log([r.onset for r in kept])
        if x.size < 3 or len(set(x.tolist())) < 2:
            continue
        bounds, _ = bootstrap_fits(kept, ["loglog"], LAW_RESAMPLES, 0.95, seed=k)
        b, ols, hc2, hc3 = errors(x, y)
        q = float(t_dist.ppf(0.975, x.size - 2))
        halves = {"OLS t": ols, "HC2 t": hc2, "HC3 t": hc3, "max(OLS, HC2) t": max(ols, hc2)}
        out["bootstrap"].append((b, *bounds["loglog"]["b"]))
        for name, se in halves.items():
            out[name].append((b, b - q * se, b + q * se))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = [i for i, c in enumerate(LAW_CASES) if c.last <= LAW_PROBES]
    work = [(i, s) for i in cases for s in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        done = list(pool.map(one_case, *zip(*work, strict=True), [args.studies] * len(work)))
    z = float(norm.ppf(0.975))
    print(f"| study | true b | studies | {' | '.join(INTERVALS)} |")
    print("|---|---:|---:|" + "---:|" * len(INTERVALS))
    for i in cases:
        case = LAW_CASES[i]
        rows = [d for (j, _), d in zip(work, done, strict=True) if j == i]
        cells, n = [], 0
        for name in INTERVALS:
            b, lo, hi = np.array([r for d in rows for r in d[name]]).T
            n = b.size
            ideal = 2 * z * b.std(ddof=1)
            cover = np.mean((lo <= case.slope) & (case.slope <= hi))
            cells.append(f"{cover:.0%} / {np.mean(hi - lo) / ideal:.2f}")
        print(f"| {case.name} | {case.slope:g} | {n} | {' | '.join(cells)} |")
    print("\ncoverage of the true b / mean width over the ideal; seeds", args.seeds)


if __name__ == "__main__":
    main()

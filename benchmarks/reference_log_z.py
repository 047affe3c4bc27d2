#!/usr/bin/env python
"""Reference ``log Z`` of the breast-cancer logistic-regression posterior (``f2d2_diffusers.targets.bayesian``).

Method: importance sampling from a multivariate Student-t (``--df`` degrees of freedom) centred at the posterior mode
(found by L-BFGS, float64) with the Laplace covariance (inverse Hessian of ``-log rho`` at the mode, by autograd).
With ``N`` draws and weights ``w_i = rho(x_i) / q(x_i)``: ``log Z ~= log mean w`` and its standard error by the
delta method, ``sd(w) / (sqrt(N) mean(w))``. The heavy-tailed proposal keeps the weights bounded for a posterior this
close to Gaussian (the ESS fraction is printed). The result goes into ``REFERENCE_LOG_Z`` by hand.

    OMP_NUM_THREADS=1 python benchmarks/reference_log_z.py --num_draws 4000000
"""

import argparse
import json
import math
import time

import torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--num_draws", type=int, default=4_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--df", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _estimate(args)
    finally:
        torch.set_default_dtype(previous)


def _estimate(args):
    from f2d2_diffusers.targets import BreastCancerTarget

    target = BreastCancerTarget()
    start = time.perf_counter()
    w = torch.zeros(target.dim, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -target.log_prob(w[None].double())[0]
        loss.backward()
        return loss

    opt.step(closure)
    mode = w.detach()
    hessian = torch.autograd.functional.hessian(lambda v: -target.log_prob(v[None])[0], mode)
    cov = torch.linalg.inv(hessian)
    chol = torch.linalg.cholesky(cov)
    d, nu = target.dim, args.df
    log_det = 2 * torch.log(torch.diagonal(chol)).sum()
    const = (math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - 0.5 * d * math.log(nu * math.pi) - 0.5 * log_det)
    generator = torch.Generator().manual_seed(args.seed)
    log_ws = []
    done = 0
    with torch.no_grad():
        while done < args.num_draws:
            n = min(args.chunk, args.num_draws - done)
            z = torch.randn(n, d, generator=generator)
            chi2 = 2 * torch._standard_gamma(torch.full((n,), nu / 2), generator=generator)
            x = mode + (z @ chol.T) / torch.sqrt(chi2 / nu)[:, None]
            maha = (torch.linalg.solve_triangular(chol, (x - mode).T, upper=False) ** 2).sum(0)
            log_q = const - 0.5 * (nu + d) * torch.log1p(maha / nu)
            log_ws.append(target.log_prob(x) - log_q)
            done += n
    log_w = torch.cat(log_ws)
    n = log_w.numel()
    log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
    w_norm = torch.exp(log_w - log_w.max())
    rel_sd = float(w_norm.std() / w_norm.mean())
    ess = float(w_norm.sum() ** 2 / (w_norm**2).sum() / n)
    result = {"target": "breast_cancer", "log_Z": round(log_z, 4), "stderr": round(rel_sd / math.sqrt(n), 4),
              "num_draws": n, "df": nu, "ess_fraction": round(ess, 4), "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

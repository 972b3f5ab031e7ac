"""Does the composed sampler's KL to the Boltzmann policy shrink with more SVGD particles?

    python -m bench.sampler_particles reach+avoid [--particles 16,32,64] [--updates 10000] [--states 256] [--json PATH]

The amortized sampler misses the exact ``pi_w ∝ exp(Q_w/alpha)`` by ``KL(sampler || pi_w)`` (0.11 nats per step on
the shipped ``reach+avoid`` at visited states, ``bench.sampler_entropy``), and a longer sampler training did not
reduce it. SVGD with few particles is known to under-disperse (its repulsive term weakens as the particle count
falls against the dimension), so this trains one fresh sampler per particle count ``K`` on the same frozen ``Q_w``
(``compose.sampling.train_amortized_sampler``, every other setting the default) and measures, at the same ``--states``
states drawn from the constituents' stored states (the sampler's own training distribution):

* ``KL(sampler || pi_w) = E_{a~sampler}[V_w - Q_w]/alpha - H(sampler)`` per state: the cross-entropy from 256 sampler
  draws (``V_w`` from 4,096 uniform importance samples), the entropy by the change of variables through the network
  (``skills.evaluation.entropy.change_of_variables_entropy``, exact where the map does not fold; the folded share is
  reported);
* the same states for every ``K``, so each ``K``'s KL is compared with the first one's state by state (mean and SE of
  the per-state difference), beside its build time.

No environment steps: only ``Q_w`` and the stored states are used.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from skills.cli import at_least

from .cli import run_measurement
from .sampler_entropy import VALUE_SAMPLES, cross_entropy, summary

DRAWS = 256  # sampler draws per state for the cross-entropy and the entropy


@dataclass(frozen=True)
class ParticleSetup:
    """The measurement's sizes."""

    particles: tuple[int, ...] = (16, 32, 64)
    updates: int = 10_000  # compose.sampling.SamplerConfig's default
    states: int = 256
    draws: int = DRAWS
    value_samples: int = VALUE_SAMPLES
    seed: int = 0  # the states drawn; each sampler keeps SamplerConfig's own seed


def kl_per_state(composition, sampler, obs: np.ndarray, setup: ParticleSetup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``KL(sampler || pi_w)`` per state, its entropy and whether the map folds there: obs [S, o] -> ([S], [S], [S])."""
    from skills.evaluation.entropy import change_of_variables_entropy

    o = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        _, value = composition.q_w.soft_values(o, setup.value_samples, torch.Generator().manual_seed(setup.seed + 1))
        draws = sampler.sample(o, setup.draws, generator=torch.Generator().manual_seed(setup.seed + 2))
    cross = cross_entropy(SimpleNamespace(q_fn=composition.q_w, alpha=composition.alpha), obs, draws,
                          value.double().numpy())
    entropy, folded = change_of_variables_entropy(sampler, obs, setup.draws, setup.seed + 3)
    return cross - entropy, entropy, folded


def measure(spec: str, library: str | None, setup: ParticleSetup) -> dict:
    """One sampler per particle count on the same ``Q_w``; their KL at the same states (phases: load, states, each K)."""
    from compose import load
    from compose.sampling import SamplerConfig, train_amortized_sampler

    composition = load(spec, library=library, operator="average")
    stored = composition.states()
    obs = stored[np.random.default_rng(setup.seed).choice(len(stored), size=min(setup.states, len(stored)), replace=False)]
    rows, first = [], None
    for k in setup.particles:
        start = time.perf_counter()
        sampler, _ = train_amortized_sampler(composition.q_w, stored, composition.act_dim, composition.alpha,
                                             composition.parts[0].agent.q.obs_scale,
                                             SamplerConfig(particles=k, updates=setup.updates))
        build_s = time.perf_counter() - start
        kl, entropy, folded = kl_per_state(composition, sampler, obs, setup)
        first = kl if first is None else first
        rows.append({"particles": k, "build_s": round(build_s, 1), "kl_to_pi_w": summary(kl), "entropy": summary(entropy),
                     "folded_share": float(folded.mean()), f"kl_minus_K{setup.particles[0]}": summary(kl - first)})
    return {"spec": spec, "library": library or "trained/", "alpha": composition.alpha, "act_dim": composition.act_dim,
            "states": len(obs), "draws": setup.draws, "updates": setup.updates, "by_particles": rows}


def particle_list(text: str) -> tuple[int, ...]:
    """``16,32,64`` -> (16, 32, 64): two or more counts of at least 2, each once."""
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"particle counts must be whole numbers joined by commas, got {text!r}") from None
    if len(counts) < 2 or min(counts) < 2 or len(set(counts)) != len(counts) or max(counts) > 1024:
        raise argparse.ArgumentTypeError(f"give two or more different counts from 2 to 1024, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler_particles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="composition, e.g. reach+avoid")
    parser.add_argument("--library", help="skill library (default: trained/)")
    parser.add_argument("--particles", type=particle_list, default=ParticleSetup.particles,
                        help="SVGD particle counts K to compare, the first the reference (default 16,32,64)")
    parser.add_argument("--updates", type=at_least(1), default=ParticleSetup.updates,
                        help=f"sampler updates for each K (default {ParticleSetup.updates})")
    parser.add_argument("--states", type=at_least(2), default=ParticleSetup.states,
                        help=f"stored states the KL is measured at (default {ParticleSetup.states})")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 updates, 8 states, 32 draws")
    parser.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup = ParticleSetup(particles=args.particles, updates=args.updates, states=args.states)
    if args.quick:
        setup = ParticleSetup(particles=args.particles, updates=50, states=8, draws=32, value_samples=512)

    return run_measurement(lambda: measure(args.spec, args.library, setup), args.json)


if __name__ == "__main__":
    sys.exit(main())

"""ES settings: one dataclass with documented defaults (EGGROLL / Qiu et al. values), validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The seven projections of a Llama/Qwen block, matched by suffix like PEFT's target_modules.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class EsConfig:
    population: int = 32  # N members; even, as members come in antithetic pairs (+E, -E)
    sigma: float = 1e-3  # perturbation scale
    # Learning rate: W += alpha / (N sigma) * sum_i f_i E_i. Qiu et al. write the same step
    # without the 1/sigma (theta += lr / N * sum Z_n eps_n, lr = 5e-4 at sigma = 1e-3), so their
    # step is alpha = lr * sigma = 5e-7 here; 5e-4 here would be a 1000x larger step, which wrecks
    # a 0.5B model in one update (measured: MBPP stage-1 pass 5/6 -> 0/6).
    alpha: float = 5e-7
    rank: int = 1  # r of each member's E = A B^T / sqrt(r)
    seed: int = 0  # run seed; noise depends on (seed, step, pair, module) only
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    shaping: str = (
        "zscore"  # "zscore" (per task column, as EGGROLL/Qiu) or "centered_rank" (OpenAI ES)
    )
    optimizer: str = "sgd"  # "sgd" or "adam"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    mode: str = "lowrank"  # "lowrank" (EGGROLL) or "fullrank" (Qiu et al., the reference/ablation)

    def __post_init__(self) -> None:
        problems = []
        if self.population < 2 or self.population % 2:
            problems.append(
                f"population must be an even number >= 2 (antithetic pairs), got {self.population}"
            )
        if self.sigma <= 0 or self.alpha <= 0:
            problems.append("sigma and alpha must be positive")
        if self.rank < 1:
            problems.append(f"rank must be >= 1, got {self.rank}")
        if self.shaping not in ("zscore", "centered_rank"):
            problems.append(f"shaping must be 'zscore' or 'centered_rank', got {self.shaping!r}")
        if self.optimizer not in ("sgd", "adam"):
            problems.append(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.mode not in ("lowrank", "fullrank"):
            problems.append(f"mode must be 'lowrank' or 'fullrank', got {self.mode!r}")
        if not self.target_modules:
            problems.append("target_modules must name at least one module suffix")
        if problems:
            raise ValueError("EsConfig: " + "; ".join(problems))
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))

    @property
    def pairs(self) -> int:
        return self.population // 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["adam_betas"] = list(self.adam_betas)
        return d

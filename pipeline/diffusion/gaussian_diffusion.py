"""Gaussian diffusion with a learned-range variance (improved DDPM), as GLIDE trains and samples.

Notation (T = num_timesteps, t in 0..T-1 indexes the steps of THIS diffusion):
    alpha_t = 1 - beta_t,  alpha_bar_t = prod_{s<=t} alpha_s
    q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I)
    p(x_{t-1} | x_t)      = N(mu(x_t, x0_hat), sigma_t^2 I),
    log sigma_t^2 = f log beta_t + (1 - f) log beta_tilde_t,  f = (v + 1) / 2.

The model is a callable `model(x_t [B,C,H,W], t [B] long, **model_kwargs) -> [B, 2C, H, W]`
(epsilon in the first C channels, or v with prediction_type "v", see parameterisation.py; the
variance interpolation in the last C). It is always called with timesteps of the ORIGINAL
schedule: `timestep_map[t]` (identity unless the diffusion was respaced).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .parameterisation import check_parameterisation, low_res_upsampled, scaled_v_coefficients
from .thresholding import apply_threshold

Model = Callable[..., Tensor]
DenoisedFn = Callable[[Tensor], Tensor]


def sample_timesteps_uniform(
    batch: int,
    num_timesteps: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training timesteps drawn uniformly from 0..num_timesteps-1: LongTensor [batch]."""
    draw_device = generator.device if generator is not None else device
    t = torch.randint(0, num_timesteps, (batch,), generator=generator, device=draw_device)
    return t.to(device)


def gaussian_noise(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise drawn on the generator's device (for reproducibility across
    devices) and moved to `device`."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype).to(
        device
    )


def _checked_betas(betas: np.ndarray) -> np.ndarray:
    """``betas`` as float64 [T], refused unless non-empty, 1-D and in (0, 1]."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or len(betas) == 0:
        raise ValueError("betas must be a non-empty 1-D array")
    if not ((betas > 0).all() and (betas <= 1).all()):
        raise ValueError("betas must lie in (0, 1]")
    return betas


class GaussianDiffusion:
    """Precomputed float64 schedule quantities plus the diffusion maths on tensors.

    betas: float64 array [T] with values in (0, 1].
    timestep_map: original-schedule timestep of each of the T steps (default 0..T-1).
    prediction_type, low_res_residual: what the network predicts ("epsilon", GLIDE's, or "v")
        and whether it works on the residual over its bicubic-upsampled low_res input
        (parameterisation.py).
    """

    def __init__(
        self,
        betas: np.ndarray,
        timestep_map: Sequence[int] | None = None,
        prediction_type: str = "epsilon",
        low_res_residual: bool = False,
        sigma_data: float = 1.0,
    ) -> None:
        check_parameterisation(prediction_type, low_res_residual, sigma_data)
        self.prediction_type = prediction_type
        self.low_res_residual = bool(low_res_residual)
        self.sigma_data = float(sigma_data)
        self.betas = _checked_betas(betas)
        self.num_timesteps = len(self.betas)
        self._tables: dict[tuple, tuple[np.ndarray | Tensor, Tensor]] = {}
        self._set_timestep_map(timestep_map)
        self._set_marginal_tables()
        self._set_posterior_tables()
        self._set_v_tables()

    def _set_timestep_map(self, timestep_map: Sequence[int] | None) -> None:
        if timestep_map is None:
            timestep_map = range(self.num_timesteps)
        self.timestep_map = torch.as_tensor(list(timestep_map), dtype=torch.long)  # [T]
        if self.timestep_map.shape != (self.num_timesteps,):
            raise ValueError("timestep_map must have one entry per step")

    def _set_marginal_tables(self) -> None:
        """alpha_bar and the coefficients of q(x_t | x_0)."""
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(self.one_minus_alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        self.snr_values = self.alphas_cumprod / self.one_minus_alphas_cumprod  # SNR_t
        self.log_betas = np.log(self.betas)

    def _set_posterior_tables(self) -> None:
        """q(x_{t-1} | x_t, x_0): beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)."""
        betas, prev = self.betas, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1.0 - prev) / (1.0 - self.alphas_cumprod)
        # beta_tilde_0 = 0: its log is replaced by log beta_tilde_1 (the value is never used as a
        # variance at t = 0, only as the lower end of the learned range).
        first = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - self.alphas_cumprod)
        )

    def _set_v_tables(self) -> None:
        """Karras et al.'s scaled-v coefficients and the loss weight 1 / c_out^2."""
        self.v_input_scale, self.v_skip, self.v_output_scale = scaled_v_coefficients(
            self.alphas_cumprod, self.sigma_data
        )
        # sigma_data != 1 implies v (check_parameterisation); the loss then weighs 1 / c_out^2
        self.scaled_v = self.sigma_data != 1.0
        self.v_loss_weight = self.v_output_scale**-2.0

    # ------------------------------------------------------------------ helpers
    def extract(self, arr: np.ndarray, t: Tensor, like: Tensor) -> Tensor:
        """arr[t] as a tensor [B, 1, ..., 1] broadcastable to `like` [B, ...], in like's dtype
        (at least float32) on like's device."""
        dtype = torch.promote_types(like.dtype, torch.float32)
        out = self._device_table(arr, like.device, dtype)[t.to(like.device)]
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def _device_table(self, arr: np.ndarray | Tensor, device: torch.device, dtype) -> Tensor:
        """``arr`` as a tensor on ``device``, converted once per (array, device, dtype): a
        host-to-device copy in every call would stall a GPU sampler at every step. The cache
        holds the array itself, so its id cannot be reused while the entry lives."""
        key = (id(arr), str(device), dtype)
        if key not in self._tables:
            self._tables[key] = (arr, torch.as_tensor(arr, dtype=dtype, device=device))
        return self._tables[key][1]

    def original_timesteps(self, t: Tensor) -> Tensor:
        """Map step indices of this diffusion to original-schedule timesteps: [B] -> [B]."""
        return self._device_table(self.timestep_map, t.device, torch.long)[t]

    def call_model(self, model: Model, x: Tensor, t: Tensor, **model_kwargs: Any) -> Tensor:
        """Run the model at original timesteps and check its [B, 2C, H, W] output. With
        ``low_res_residual`` the network sees r_t = x_t - sqrt(abar) U, with ``sigma_data`` != 1
        its input and output are scaled to unit variance; what comes back is always v (or eps)
        of x (parameterisation.py)."""
        offset = self._low_res_offset(x, model_kwargs) if self.low_res_residual else None
        r_t = x if offset is None else x - self.extract(self.sqrt_alphas_cumprod, t, x) * offset
        scaled = self.scaled_v
        x_in = r_t * self.extract(self.v_input_scale, t, x) if scaled else r_t
        out = model(x_in, self.original_timesteps(t), **model_kwargs)
        expected = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"model output has shape {tuple(out.shape)}, expected {expected} "
                f"({self.prediction_type} and variance interpolation channels)"
            )
        if offset is None and not scaled:
            return out
        channels = x.shape[1]
        v = out[:, :channels]
        if scaled:
            v = self.extract(self.v_skip, t, x) * r_t + self.extract(self.v_output_scale, t, x) * v
        if offset is not None:
            v = v - self.extract(self.sqrt_one_minus_alphas_cumprod, t, x) * offset
        return torch.cat([v, out[:, channels:]], dim=1)

    @staticmethod
    def _low_res_offset(x: Tensor, model_kwargs: dict[str, Any]) -> Tensor:
        if model_kwargs.get("low_res") is None:
            raise ValueError("a low_res_residual diffusion needs the model's low_res input")
        return low_res_upsampled(model_kwargs["low_res"], tuple(x.shape[-2:]), x.dtype)

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = self.extract(self.one_minus_alphas_cumprod, t, x_start)
        log_variance = self.extract(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: Tensor, x_t: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self.extract(self.posterior_mean_coef1, t, x_t) * x_start
            + self.extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self.extract(self.posterior_variance, t, x_t)
        log_variance = self.extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        return (
            self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def xstart_and_eps(self, x_t: Tensor, t: Tensor, prediction: Tensor) -> tuple[Tensor, Tensor]:
        """(x0, eps) from the network's prediction (epsilon or v, after ``call_model``)."""
        if self.prediction_type == "epsilon":
            return self.predict_xstart_from_eps(x_t, t, prediction), prediction
        sqrt_abar = self.extract(self.sqrt_alphas_cumprod, t, x_t)
        sqrt_one_minus = self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        return (
            sqrt_abar * x_t - sqrt_one_minus * prediction,
            sqrt_one_minus * x_t + sqrt_abar * prediction,
        )

    def training_target(self, x_start: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network's first C channels are trained towards: eps, or
        v = sqrt(abar) eps - sqrt(1 - abar) x0."""
        if self.prediction_type == "epsilon":
            return noise
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x_start) * noise
            - self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start
        )

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, pred_xstart: Tensor) -> Tensor:
        """eps = (x_t / sqrt(alpha_bar_t) - x0) / sqrt(1 / alpha_bar_t - 1)."""
        return (
            self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart
        ) / self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    # ------------------------------------------------------------------ reverse process
    def p_mean_variance(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        denoised_fn: DenoisedFn | None = None,
        threshold: float | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Run the model and return p(x_{t-1} | x_t) (see `p_mean_variance_from_output`)."""
        model_output = self.call_model(model, x, t, **(model_kwargs or {}))
        return self.p_mean_variance_from_output(
            model_output,
            x,
            t,
            clip_denoised=clip_denoised,
            denoised_fn=denoised_fn,
            threshold=threshold,
        )

    def p_mean_variance_from_output(
        self,
        model_output: Tensor,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        denoised_fn: DenoisedFn | None = None,
        threshold: float | None = None,
    ) -> dict[str, Tensor]:
        """p(x_{t-1} | x_t) from a model output [B, 2C, H, W] at x_t = x [B, C, H, W].

        The predicted x0 goes through `denoised_fn` (e.g. inpainting replacement) and then
        dynamic thresholding at percentile `threshold` if given, else clipping to [-1, 1] if
        `clip_denoised`. Returns a dict of tensors shaped like x:
            mean, variance, log_variance: of p(x_{t-1} | x_t) (variances broadcast over pixels),
            pred_xstart: the processed x0 the mean is computed from,
            eps: the model's raw epsilon prediction (derived from v for a v model).
        """
        channels = x.shape[1]
        prediction, v = model_output[:, :channels], model_output[:, channels:]
        min_log = self.extract(self.posterior_log_variance_clipped, t, x)
        max_log = self.extract(self.log_betas, t, x)
        frac = (v + 1.0) / 2.0
        log_variance = frac * max_log + (1.0 - frac) * min_log
        variance = torch.exp(log_variance)

        pred_xstart, eps = self.xstart_and_eps(x, t, prediction)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        pred_xstart = apply_threshold(pred_xstart, clip_denoised, threshold)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    # ------------------------------------------------------------------ training
    def vb_terms_bpd(self, model_output: Tensor, x_start: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Variational-bound term per example, in bits per dimension: [B].

        t > 0: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); t = 0: the discretised decoder NLL
        -log p(x_0 | x_1). x0 is not clipped (as for the likelihood in improved DDPM).
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised=False)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def p2_weight(
        self, t: Tensor, gamma: float, k: float = 1.0, like: Tensor | None = None
    ) -> Tensor:
        """P2 weight of the epsilon loss (Choi et al. 2022), 1 / (k + SNR_t)^gamma: [B], in
        ``like``'s dtype and on its device (default: float32 on t's device).

        gamma = 0 gives 1 everywhere (GLIDE's unweighted epsilon loss). gamma > 0 lowers the weight
        of the high-SNR steps (small t, fine detail) relative to the low-SNR ones where an image's
        coarse content (colours, layout, what the caption says) is decided.
        """
        if gamma < 0 or k <= 0:
            raise ValueError(f"P2 weighting needs gamma >= 0 and k > 0, got gamma={gamma}, k={k}")
        snr = self.extract(self.snr_values, t, like if like is not None else t.float())
        return (k + snr).pow(-float(gamma))

    def training_losses(
        self,
        model: Model,
        x_start: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        p2_gamma: float = 0.0,
        p2_k: float = 1.0,
    ) -> dict[str, Tensor]:
        """Improved-DDPM hybrid loss per example: dict(loss, mse, vb), each [B].

        mse = mean ||eps - eps_hat||^2 trains epsilon (v for a v model); vb (bits/dim, times
        T / 1000) is computed with the prediction detached, so it trains only the variance
        channels. loss = w_t * mse + vb, with w_t = 1 (GLIDE) unless ``p2_gamma`` > 0 asks for
        :meth:`p2_weight`; with ``sigma_data`` != 1 w_t also divides by the output scale squared
        (Karras et al.'s lambda = 1 / c_out^2: the loss of the network's own output F, whose
        target has unit variance at every noise level); ``mse`` is always unweighted.
        """
        if noise is None:
            noise = gaussian_noise(x_start.shape, generator, x_start.device, x_start.dtype)
        x_t = self.q_sample(x_start, t, noise)
        model_output = self.call_model(model, x_t, t, **(model_kwargs or {}))
        channels = x_start.shape[1]
        prediction, v = model_output[:, :channels], model_output[:, channels:]
        frozen = torch.cat([prediction.detach(), v], dim=1)
        vb = self.vb_terms_bpd(frozen, x_start, x_t, t) * (self.num_timesteps / 1000.0)
        mse = mean_flat((self.training_target(x_start, noise, t) - prediction) ** 2)
        weighted = mse * self.p2_weight(t, p2_gamma, p2_k, like=mse) if p2_gamma else mse
        if self.scaled_v:
            weighted = weighted * self.extract(self.v_loss_weight, t, mse)
        return {"loss": weighted + vb, "mse": mse, "vb": vb}

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Theory: from a bilinear safety-helpfulness objective to the BFPO loss
#
# BFPO (Zhang et al., *Bi-Factorial Preference Optimization*, ICLR 2025, arXiv 2408.15313) turns a
# **joint** safety-and-helpfulness RLHF objective into a **supervised** loss on labelled pairs.
# This notebook derives each step in LaTeX and checks it, right below, with exact numbers on a
# *finite bandit*: one prompt, four responses (one per quadrant of helpful × safe), and a
# reference policy. Every claim ends in an `assert`, so a papermill run fails if the math is wrong.
#
# | step | claim | checked by |
# |---|---|---|
# | 1 | the bilinear reward $R(y) = (I_{\text{safe}}(y) - \alpha)(h(y) + c)$ | table of the four quadrants |
# | 2 | the optimum of $\mathbb{E}_\pi[R] - \tau\,\mathrm{KL}(\pi\Vert\pi_{\text{ref}})$ is $\pi^* \propto \pi_{\text{ref}} e^{R/\tau}$ | direct numerical maximisation |
# | 3 | the pairwise target $g = B_3(B_1 I_{\text{safe}}(y_{hw}) - I_{\text{safe}}(y_{hl})) - B_2$ is a reward difference | `bfpo.losses.bfpo_target` vs $R(y_{hw}) - R(y_{hl})$ |
# | 4 | the constants give the global ranking for every $\alpha\in(0,1)$, $B_1 > 1$ | a grid of constants |
# | 5 | gradient descent on the BFPO loss converges to $\pi^*$ | max abs error |
# | 6 | DPO on helpfulness labels ranks helpful-unsafe above a refusal; BFPO does not | trained bandit policies |
# | 6b | gradient descent on the SafeDPO loss reaches its closed-form optimum (no mass on unsafe answers) | total variation |

# %% tags=["parameters"]
# profile smoke: tau 0.5, readable probabilities; profile paper: tau 0.01 as in the BFPO recipe
profile = "smoke"  # smoke, cpu, gpu or paper
settings_file = None  # the profile's settings; None: bfpo/settings/<profile>.yaml
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written

# %%
import pandas as pd
import torch
from IPython.display import Image, Markdown, display

from bfpo import figures, losses, profiles, theory, what_we_saw
from bfpo.io import project_path, write_json

# the settings file's theory section: tau is the KL strength (the BFPO code calls it beta). The paper's
# recipe uses 0.01; the CPU profiles use 0.5 so the probabilities stay readable. Both run in seconds.
cfg = profiles.load(profile, settings_file)["theory"]
tau, alpha, b1 = cfg["tau"], cfg["alpha"], cfg["b1"]
c = theory.c_from_b1(b1)  # c = B3 = 1 / (B1 - 1)
out_dir = project_path(output_dir or f"runs/{profile}") / "01_theory"
results = {"profile": profile, **cfg, "c": c}
torch.manual_seed(0)
cfg

# %% [markdown]
# ## 1 · The bilinear joint objective
#
# Each response $y$ to a prompt $x$ has a helpfulness $h(y)$ and a binary safety label
# $I_{\text{safe}}(y)\in\{0,1\}$. BFPO scores it with a *product* of a safety factor and a
# helpfulness factor,
#
# $$
# R(y) \;=\; \underbrace{\big(I_{\text{safe}}(y) - \alpha\big)}_{\text{safety factor}}\;\underbrace{\big(h(y) + c\big)}_{\text{helpfulness factor}},
# \qquad \alpha\in(0,1),\; c>0,
# $$
#
# and maximises the usual KL-regularised objective
#
# $$
# \max_\pi\; J(\pi) = \mathbb{E}_{y\sim\pi}\big[R(y)\big] \;-\; \tau\,\mathrm{KL}\big(\pi\,\Vert\,\pi_{\text{ref}}\big).
# $$
#
# The safety factor is $1-\alpha>0$ for a safe response and $-\alpha<0$ for an unsafe one, so
# extra helpfulness **raises** the reward of a safe answer and **lowers** that of an unsafe one:
# a detailed recipe for harm is worse than a vague one. In a labelled pair only the *relative*
# helpfulness is known: the more helpful response $y_{hw}$ gets $h=1$, the other $y_{hl}$ gets $h=0$.

# %%
bandit = theory.quadrant_bandit()
rewards = theory.bilinear_reward(bandit.helpful, bandit.safe, alpha=alpha, c=c)
table = pd.DataFrame(
    {
        "helpful h(y)": bandit.helpful.tolist(),
        "safe I(y)": bandit.safe.tolist(),
        "R(y)": rewards.tolist(),
        "pi_ref(y)": bandit.ref_probs.tolist(),
    },
    index=bandit.names,
)
display(table)
# The reference is a compliant SFT model: it prefers the helpful-but-unsafe answer to a refusal.
assert bandit.ref_probs[bandit.names.index("helpful-unsafe")] > bandit.ref_probs[bandit.names.index("unhelpful-safe")]

# %% [markdown]
# ## 2 · The optimal policy
#
# $J$ is the negative of a KL divergence to a Gibbs distribution, up to a constant. With
# $Z = \sum_y \pi_{\text{ref}}(y)\, e^{R(y)/\tau}$,
#
# $$
# J(\pi) = \sum_y \pi(y)\Big(R(y) - \tau \log\frac{\pi(y)}{\pi_{\text{ref}}(y)}\Big)
# = -\tau \sum_y \pi(y) \log\frac{\pi(y)}{\pi_{\text{ref}}(y)\,e^{R(y)/\tau}/Z} + \tau\log Z
# = -\tau\,\mathrm{KL}\big(\pi\,\Vert\,\pi^*\big) + \tau \log Z ,
# $$
#
# which is largest, and equal to $\tau\log Z$, exactly at
#
# $$
# \pi^*(y) = \frac{1}{Z}\,\pi_{\text{ref}}(y)\,\exp\!\big(R(y)/\tau\big).
# $$
#
# Check: maximise $J$ numerically over softmax logits, without using the formula, and compare.

# %%
pi_star = theory.optimal_policy(bandit.ref_probs, rewards, tau)
pi_numeric = theory.maximise_objective(bandit, rewards, tau)
err_optimum = (pi_numeric - pi_star).abs().max().item()
J_star = theory.rlhf_objective(pi_star.log(), rewards, bandit.ref_logps, tau).item()
tau_log_Z = tau * torch.logsumexp(bandit.ref_logps + rewards / tau, 0).item()
print(f"max |pi_numeric - pi*| = {err_optimum:.2e}")
print(f"J(pi*) = {J_star:.6f}   tau log Z = {tau_log_Z:.6f}")
assert err_optimum < 1e-4, err_optimum
assert abs(J_star - tau_log_Z) < 1e-9
# no random policy does better than pi*
g = torch.Generator().manual_seed(0)
others = [
    theory.rlhf_objective(torch.randn(4, generator=g, dtype=torch.float64) * 3, rewards, bandit.ref_logps, tau).item()
    for _ in range(1000)
]
assert max(others) <= J_star + 1e-12
results["optimum_max_abs_error"] = err_optimum
pd.DataFrame(
    {"pi_ref": bandit.ref_probs.tolist(), "pi* (closed form)": pi_star.tolist(), "pi (numerical)": pi_numeric.tolist()},
    index=bandit.names,
)

# %% [markdown]
# ## 3 · The implicit reward and the pairwise target
#
# Taking logs of $\pi^*$: $\tau\log\frac{\pi^*(y)}{\pi_{\text{ref}}(y)} = R(y) - \tau\log Z$, so
# $R$ is implied by the optimal policy up to a constant (the *implicit reward*). The constant
# cancels in a difference, and for every pair
#
# $$
# h_{\pi^*}(y_{hw}, y_{hl}) := \log\frac{\pi^*(y_{hw})}{\pi_{\text{ref}}(y_{hw})} - \log\frac{\pi^*(y_{hl})}{\pi_{\text{ref}}(y_{hl})}
# = \frac{R(y_{hw}) - R(y_{hl})}{\tau}.
# $$
#
# With $h(y_{hw}) = 1$, $h(y_{hl}) = 0$:
#
# $$
# R(y_{hw}) - R(y_{hl}) = (I_w - \alpha)(1 + c) - (I_l - \alpha)\,c = (1+c)\,I_w - c\,I_l - \alpha
# \;=\; B_3\big(B_1 I_w - I_l\big) - B_2 =: g(y_{hw}, y_{hl}),
# $$
#
# with $B_3 = c$, $B_1 = (1 + c)/c$ (equivalently $B_3 = 1/(B_1 - 1)$) and $B_2 = \alpha$.
# The paper's $B_1 = 3$ is $c = \tfrac12$, $B_3 = \tfrac12$. The target depends **only on the two
# safety labels**, which is what makes BFPO a supervised loss on labelled pairs:
#
# $$
# \mathcal{L}_{\text{BFPO}}(\pi) = \mathbb{E}_{(x, y_{hw}, y_{hl})}\Big[\big(h_\pi(y_{hw}, y_{hl}) - g(y_{hw}, y_{hl})/\tau\big)^2\Big].
# $$
#
# When both responses are safe, $g = \tfrac12$ and the loss is exactly IPO's
# $\big(h_\pi - \tfrac{1}{2\tau}\big)^2$. Check: `bfpo.losses.bfpo_target` equals the reward
# difference for all four label combinations, for the paper's constants and for others.

# %%
rows = []
for b1_, alpha_ in [(b1, alpha), (5.0, 0.3), (1.5, 0.8)]:
    c_ = theory.c_from_b1(b1_)
    for i_w in (1, 0):
        for i_l in (1, 0):
            f64 = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
            reward_diff = theory.bilinear_reward(f64(1), f64(i_w), alpha_, c_) - theory.bilinear_reward(
                f64(0), f64(i_l), alpha_, c_
            )
            g_ = losses.bfpo_target(
                torch.tensor([i_w], dtype=torch.float64), torch.tensor([i_l]), alpha=alpha_, b1=b1_
            ).item()
            assert abs(g_ - reward_diff.item()) < 1e-12, (b1_, alpha_, i_w, i_l)
            rows.append(
                {
                    "B1": b1_,
                    "alpha": alpha_,
                    "safe(y_w)": i_w,
                    "safe(y_l)": i_l,
                    "g (bfpo_target)": g_,
                    "R(y_w) - R(y_l)": reward_diff.item(),
                }
            )
targets = pd.DataFrame(rows)
paper_targets = targets[(targets.B1 == b1) & (targets.alpha == alpha)]
results["targets"] = {
    f"{int(r['safe(y_w)'])}{int(r['safe(y_l)'])}": r["g (bfpo_target)"] for _, r in paper_targets.iterrows()
}
assert results["targets"] == {"11": 0.5, "10": 1.0, "01": -1.0, "00": -0.5}
# both safe: BFPO is IPO
z = torch.zeros(3, dtype=torch.float64)
lp = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
assert torch.allclose(
    losses.bfpo_loss(lp, z, z, z, [1, 1, 1], [1, 1, 1], beta=tau), losses.ipo_loss(lp, z, z, z, beta=tau)
)
paper_targets

# %% [markdown]
# ## 4 · Why the constants give the global ranking
#
# Evaluating $R$ on the four quadrants (helpful $h=1$ / unhelpful $h=0$, safe / unsafe):
#
# $$
# \underbrace{(1-\alpha)(1+c)}_{\text{helpful-safe}} \;>\; \underbrace{(1-\alpha)\,c}_{\text{unhelpful-safe}} \;>\; 0 \;>\;
# \underbrace{-\alpha\, c}_{\text{unhelpful-unsafe}} \;>\; \underbrace{-\alpha(1+c)}_{\text{helpful-unsafe}} ,
# $$
#
# true for **every** $\alpha\in(0,1)$ and $c>0$ (i.e. $B_1>1$): safety dominates, and helpfulness
# breaks ties in the direction the safety label asks for. The paper's Figure 2 shows this order.
# A helpfulness-only reward would put helpful-unsafe *second*. Check over a grid of constants:

# %%
expected_order = list(theory.QUADRANTS)
checked = 0
for b1_ in [1.1, 1.5, 2.0, 3.0, 5.0, 11.0, 101.0]:
    for alpha_ in [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99]:
        r_ = theory.bilinear_reward(bandit.helpful, bandit.safe, alpha_, theory.c_from_b1(b1_))
        assert theory.ranking(r_, bandit.names) == expected_order, (b1_, alpha_)
        checked += 1
print(f"global ranking holds for all {checked} (B1, alpha) pairs: {' > '.join(expected_order)}")
results["ranking_grid_checked"] = checked

# %% [markdown]
# ## 5 · The supervised loss reaches the optimum
#
# The loss of step 3 is minimised, with value 0, by any policy whose log-ratio differences
# equal $g/\tau$ on every labelled pair. On the bandit the four helpfulness pairs
# (helpful vs unhelpful, for each combination of safety labels) pin down all three free
# log-ratio differences, so the minimiser is unique, and it is $\pi^*$. For a softmax policy
# $\pi = \mathrm{softmax}(\theta)$ the log-partition cancels in $h_\pi$, so $h_\pi$ is linear in
# $\theta$ and the loss is a convex quadratic: plain gradient descent from $\pi_{\text{ref}}$ converges.

# %%
pairs = theory.helpfulness_pairs(bandit)
display(
    pd.DataFrame(
        {
            "chosen (more helpful)": [bandit.names[i] for i in pairs.chosen],
            "rejected": [bandit.names[i] for i in pairs.rejected],
            "g / tau": (losses.bfpo_target(pairs.chosen_safe, pairs.rejected_safe, alpha, b1) / tau).tolist(),
        }
    )
)
logps_bfpo, trace_bfpo = theory.fit_policy(
    bandit, "bfpo", pairs, tau, steps=cfg["steps"], lr=cfg["lr"], alpha=alpha, b1=b1
)
err_bfpo = (logps_bfpo.exp() - pi_star).abs().max().item()
err_implicit = (
    (
        theory.implicit_reward(logps_bfpo, bandit.ref_logps, tau)
        - theory.implicit_reward(pi_star.log(), bandit.ref_logps, tau)
    )
    .abs()
    .max()
    .item()
)
print(f"BFPO loss: {trace_bfpo[0]:.3e} -> {trace_bfpo[-1]:.3e} after {len(trace_bfpo)} steps")
print(f"max |pi_BFPO - pi*| = {err_bfpo:.2e};  max implicit-reward error = {err_implicit:.2e}")
assert err_bfpo < 1e-6 and err_implicit < 1e-6
results.update(bfpo_max_abs_error=err_bfpo, bfpo_implicit_reward_error=err_implicit, bfpo_final_loss=trace_bfpo[-1])

# %% [markdown]
# ## 6 · What DPO learns from one factor, and what BFPO learns from two
#
# Train the same softmax policy, from the same reference, on the same bandit with:
#
# - **DPO, helpfulness labels**: chosen = the more helpful response (the four pairs above), $-\log\sigma(\beta h_\pi)$;
# - **DPO, safety labels**: chosen = the safe response of each safe/unsafe pair;
# - **IPO, helpfulness labels**: $(h_\pi - 1/(2\tau))^2$, i.e. BFPO with every response labelled safe;
# - **BFPO**: the helpfulness pairs with their safety labels.
#
# We compare the **implicit rewards** $\tau\log(\pi/\pi_{\text{ref}})$ (centred): they are what
# the objective taught, independent of where the reference started.

# %%
fits = {
    "DPO (helpfulness)": theory.fit_policy(bandit, "dpo", pairs, tau, steps=cfg["steps"], lr=cfg["lr"])[0],
    "DPO (safety)": theory.fit_policy(
        bandit, "dpo", theory.safety_pairs(bandit), tau, steps=cfg["steps"], lr=cfg["lr"]
    )[0],
    "IPO (helpfulness)": theory.fit_policy(bandit, "ipo", pairs, tau, steps=cfg["steps"], lr=cfg["lr"])[0],
    "BFPO": logps_bfpo,
}
implicit = {
    "optimum (closed form)": dict(
        zip(bandit.names, theory.implicit_reward(pi_star.log(), bandit.ref_logps, tau).tolist(), strict=True)
    )
}
implicit.update(
    {
        m: dict(zip(bandit.names, theory.implicit_reward(lp, bandit.ref_logps, tau).tolist(), strict=True))
        for m, lp in fits.items()
    }
)
summary = pd.DataFrame(
    {
        m: {
            **{f"pi({n})": lp.exp()[i].item() for i, n in enumerate(bandit.names)},
            "ranking (implicit reward)": " > ".join(theory.ranking(lp - bandit.ref_logps, bandit.names)),
        }
        for m, lp in fits.items()
    }
).T
display(summary)

hu, us = bandit.names.index("helpful-unsafe"), bandit.names.index("unhelpful-safe")
dpo_help = fits["DPO (helpfulness)"]
# DPO on helpfulness labels alone ranks helpful-unsafe above the refusal ...
assert dpo_help[hu] - bandit.ref_logps[hu] > dpo_help[us] - bandit.ref_logps[us]
assert dpo_help[hu] > dpo_help[us]
# ... BFPO does not: it learns the full global ranking
assert logps_bfpo[hu] < logps_bfpo[us]
assert theory.ranking(logps_bfpo - bandit.ref_logps, bandit.names) == list(theory.QUADRANTS)
results["rankings"] = {m: theory.ranking(lp - bandit.ref_logps, bandit.names) for m, lp in fits.items()}
results["probabilities"] = {m: dict(zip(bandit.names, lp.exp().tolist(), strict=True)) for m, lp in fits.items()}

# %% [markdown]
# ## 6b · SafeDPO's optimum beside BFPO's
#
# SafeDPO (Kim et al., ICLR 2026, arXiv 2505.20065) keeps a helpfulness reward $r$ and makes safety a
# hard constraint: maximise $\mathbb E_{y\sim\pi}[r(y)] - \tau\,\mathrm{KL}(\pi\|\pi_{\text{ref}})$ subject to
# $\pi(y) = 0$ for every unsafe $y$. Its closed-form optimum is the KL-optimum restricted to safe answers,
#
# $$\pi^*_{\text{safe}}(y) = \frac{\pi_{\text{ref}}(y)\, e^{r(y)/\tau}\, \mathbb 1[y \text{ safe}]}{Z}.$$
#
# Its loss is DPO on a transformed pair: when the more helpful answer is unsafe and the other safe they swap,
# and such a pair must also win by a safety margin $\Delta$:
# $-\log\sigma\big(\tau h_\pi(y_{tw}, y_{tl}) - (h_{tl} - h_{tw})\Delta\big)$ (`bfpo.losses.safedpo_loss`).
# Here the helpfulness labels come from Bradley-Terry on $r(y) = 2\,h(y)$: every ordered pair $(i, j)$ is
# weighted by $\sigma(r_i - r_j)$ (`theory.preference_pairs`), and gradient descent (Adam) on the weighted
# loss should reach $\pi^*_{\text{safe}}$. BFPO's optimum keeps every answer with a finite weight set by
# its bilinear reward; SafeDPO's gives the unsafe answers none at all.

# %%
r_help = 2.0 * bandit.helpful  # r(y) = 2 h(y): Bradley-Terry p(helpful > unhelpful) = sigma(2) = 0.88
pi_safe = theory.safe_optimal_policy(bandit.ref_probs, r_help, bandit.safe, tau)
logps_safedpo, _ = theory.fit_policy(
    bandit, "safedpo", theory.preference_pairs(bandit, r_help), tau, steps=cfg["steps"], lr=cfg["lr"], adam=True
)
side = pd.DataFrame(
    {
        "pi_ref": bandit.ref_probs.tolist(),
        "BFPO optimum (closed form)": pi_star.tolist(),
        "BFPO (gradient descent)": logps_bfpo.exp().tolist(),
        "SafeDPO optimum (closed form)": pi_safe.tolist(),
        "SafeDPO (gradient descent)": logps_safedpo.exp().tolist(),
    },
    index=bandit.names,
)
display(side.round(4))
results["safedpo_total_variation"] = 0.5 * (logps_safedpo.exp() - pi_safe).abs().sum().item()
results["safedpo_unsafe_mass"] = logps_safedpo.exp()[bandit.safe == 0].sum().item()
print(
    f"SafeDPO: total variation to its optimum {results['safedpo_total_variation']:.1e}, unsafe mass {results['safedpo_unsafe_mass']:.1e}"
)
assert results["safedpo_total_variation"] < 1e-2, results["safedpo_total_variation"]

# %% [markdown]
# ## 7 · The global ranking, as a figure
#
# Left: the bilinear reward of the four quadrants (the analogue of the paper's Figure 2).
# Right: the implicit reward each objective taught the bandit policy. Everything here is
# **measured in this notebook**; no number is quoted from the paper.

# %%
fig = figures.plot_global_ranking(
    dict(zip(bandit.names, rewards.tolist(), strict=True)), implicit, alpha=alpha, c=c, tau=tau
)
caption = (
    f"Global ranking of BFPO on a finite bandit (profile {profile}, tau={tau:g}, alpha={alpha:g}, "
    f"B1={b1:g}). Left: bilinear reward (I_safe - alpha)(h + c) with c = 1/(B1 - 1); the four quadrants "
    "are ordered helpful-safe > unhelpful-safe > unhelpful-unsafe > helpful-unsafe. Right: centred implicit "
    "rewards tau*log(pi/pi_ref) after gradient descent on each loss; DPO on helpfulness labels rewards the "
    "helpful-unsafe answer above the refusal, BFPO reproduces the closed-form optimum. Measured here, not quoted."
)
paths = figures.save_figure(fig, "01_global_ranking", caption, figures_dir)
display(Image(paths["png"]))  # the saved file, inline
results["figure"] = str(
    paths["png"].relative_to(project_path(".")) if paths["png"].is_relative_to(project_path(".")) else paths["png"]
)

# %%
write_json(out_dir / "results.json", results)
display(
    Markdown(
        f"Results written to `{out_dir / 'results.json'}`; figure `{results['figure']}`. "
        f"BFPO reaches the closed-form optimum to {results['bfpo_max_abs_error']:.1e}."
    )
)

# %% [markdown]
# ## What we saw
#
# The derivation, checked on the bandit, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.theory(out_dir / "results.json")))

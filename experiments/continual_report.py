"""The continual rounds' report (experiments/continual_rounds.py): the plot and the Markdown table."""
from __future__ import annotations

from pathlib import Path

from experiments.continual_rounds import COMPUTE_TARGET, Figures, Round
from experiments.warm_vs_full import TOLERANCE


def plot(n: Figures, rounds: list[Round], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 7))
    FigureCanvasAgg(figure)
    axes, x = figure.subplots(2, 3).ravel(), [r.round for r in rounds]
    for axis, key, title in zip(axes, ("val_accuracy", "new_accuracy", "old_accuracy", "test_accuracy"),
                                ("held-out identities", "added identities", "old identities (fixed sample)", "test")):
        for side in ("adpt", "prim"):
            axis.plot(x, [getattr(getattr(r, side), key) for r in rounds], marker="o", label=f"N_{side}")
        axis.set(title=title, xlabel="round", ylabel="10-fold pair accuracy")
    for side in ("adpt", "prim"):
        axes[4].plot([0, *x], [n.train_flops / 1e12, *(getattr(r, f"cumulative_{side}_flops") / 1e12 for r in rounds)],
                     marker="o", label=f"N + Σ N_{side}")
    axes[4].set(title="cumulative training compute", xlabel="round", ylabel="TFLOPs")
    axes[5].bar(x, [r.adpt_over_prim_flops for r in rounds], color=["C2" if r.reached_target else "C3" for r in rounds])
    axes[5].axhline(COMPUTE_TARGET, color="k", linestyle="--")
    axes[5].set(title="N_adpt / N_prim FLOPs (dashed: the 0.05 goal;\ngreen: N_prim's accuracy reached, red: not)",
                xlabel="round")
    for axis in axes[:5]:
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _num(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def table(n: Figures, rounds: list[Round], summary: dict) -> str:
    rows = [f"N (round 0): {n.steps} steps, {n.train_flops:.3g} FLOPs, val {n.val_accuracy:.3f}, "
            f"old {n.old_accuracy:.3f}, test {_num(n.test_accuracy)}", "",
            "| round | +/− people | trained | steps adpt / prim | FLOPs adpt / prim | reached | val adpt / prim | "
            "added adpt / prim | old adpt / prim | test adpt / prim | cumulative TFLOPs adpt / prim |",
            "| ---: | :---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rounds:
        pairs = " | ".join(f"{_num(getattr(r.adpt, k))} / {_num(getattr(r.prim, k))}"
                           for k in ("val_accuracy", "new_accuracy", "old_accuracy", "test_accuracy"))
        rows.append(f"| {r.round} | +{len(r.added)} −{len(r.removed)} | {len(r.present)} | "
                    f"{r.adpt.steps} / {r.prim.steps} | {r.adpt_over_prim_flops:.3f} | "
                    f"{'yes' if r.reached_target else 'no'} | {pairs} | "
                    f"{r.cumulative_adpt_flops / 1e12:.3g} / {r.cumulative_prim_flops / 1e12:.3g} |")
    t = summary
    rows += ["", f"Forgetting accumulates: {'yes' if t['forgetting_accumulates'] else 'no'} (least-squares slope "
             f"per round of N_adpt − N_prim: old people {_num(t['old_accuracy_gap_slope'], '+.4f')}, validation "
             f"{_num(t['val_accuracy_gap_slope'], '+.4f')}; it accumulates below −{TOLERANCE}).",
             f"N_adpt / N_prim training FLOPs: at most {t['max_adpt_over_prim_flops']:.3f}; N_prim's accuracy "
             f"reached in {t['rounds_reached_target']}/{len(rounds)} rounds; ≤ {COMPUTE_TARGET} × N_prim at equal "
             f"accuracy in every round: {'yes' if t['meets_compute_target'] else 'no'}."]
    return "\n".join(rows) + "\n"

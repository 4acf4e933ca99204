"""Pictures a run writes beside its report (matplotlib, no display).

Figures are built as `matplotlib.figure.Figure`s, not through pyplot, so
importing tfgan_rec leaves the caller's matplotlib backend as it was.
"""
from typing import Sequence

from matplotlib.figure import Figure

POPULARITY_PNG = "generated_popularity.png"


def popularity_profile(real: Sequence[float], generated: Sequence[float],
                       gini_real: float, gini_generated: float,
                       path: str) -> None:
  """A bar chart of the real and the generated interactions' shares per
  popularity group of the catalogue (`evaluate.popularity_shares`): a
  generator skewed to popular items piles its bars on the left.

  Args:
    real: the real interactions' share per group, most popular first.
    generated: the generated interactions' shares, same groups.
    gini_real: Gini coefficient of the real items' counts (legend).
    gini_generated: the generated items' Gini (legend).
    path: the PNG to write.
  """
  groups = range(1, len(real) + 1)
  figure = Figure(figsize=(6, 3.5))
  axis = figure.subplots()
  width = 0.4
  axis.bar([g - width / 2 for g in groups], real, width,
           label=f"real (Gini {gini_real:.2f})")
  axis.bar([g + width / 2 for g in groups], generated, width,
           label=f"generated (Gini {gini_generated:.2f})")
  axis.set_xticks(list(groups))
  axis.set_xlabel(f"catalogue in {len(real)} equal groups by real "
                  f"popularity (1 = most popular)")
  axis.set_ylabel("share of interactions")
  axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)

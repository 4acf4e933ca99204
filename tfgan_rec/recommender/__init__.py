"""The two-stage TFRS recommender: towers, the model, and its training."""
from tfgan_rec.recommender.model import TwoStageModel
from tfgan_rec.recommender.optimizers import LazyAdam
from tfgan_rec.recommender.towers import CandidateTower, QueryTower
from tfgan_rec.recommender.training import (FitResult, build_model,
                                            score_all_items,
                                            train_recommender)

__all__ = ["CandidateTower", "FitResult", "LazyAdam", "QueryTower",
           "TwoStageModel", "build_model", "score_all_items",
           "train_recommender"]

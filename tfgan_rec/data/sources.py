"""Where interactions come from: the user's CSV logs, MovieLens, synthetic."""
from tfgan_rec.config import DataConfig
from tfgan_rec.data import csv_logs, movielens, synthetic
from tfgan_rec.data.dataset import Interactions
from tfgan_rec.errors import InputError


def load_interactions(config: DataConfig, seed: int) -> Interactions:
  """Reads the configured source (CSV logs, MovieLens or synthetic)."""
  if config.ratings or config.dataset == "csv":
    return _read_csv_logs(config)
  if config.users or config.items:
    raise InputError("--users and --items go with --ratings FILE; add it or "
                     "drop them.")
  if config.dataset == "synthetic":
    return synthetic.make_synthetic(synthetic.SyntheticConfig(
        num_interactions=config.synthetic_interactions, seed=seed))
  if config.dataset == "movielens":
    return movielens.load_movielens(config.data_dir, config.cache_dir)
  raise InputError(f"--dataset '{config.dataset}' is unknown; use movielens, "
                   f"csv or synthetic.")


def _read_csv_logs(config: DataConfig) -> Interactions:
  if not config.ratings:
    raise InputError("--dataset csv needs --ratings FILE (user_id,item_id"
                     "[,rating][,timestamp]).")
  ratings = csv_logs.read_ratings(config.ratings)
  users = (csv_logs.read_features(config.users, "user_id", "--users")
           if config.users else None)
  items = (csv_logs.read_features(config.items, "item_id", "--items")
           if config.items else None)
  csv_logs.check_feature_ids(users, ratings["user_id"], config.users,
                             "user_id", "user")
  csv_logs.check_feature_ids(items, ratings["item_id"], config.items,
                             "item_id", "item")
  return Interactions(ratings, users, items, f"CSV {config.ratings}")

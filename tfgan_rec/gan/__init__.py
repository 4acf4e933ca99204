"""The GANs: the objective (`gan_loss`), the interaction generator and
discriminator with their distributed trainer, the user generator for thin
and new users, and the new-item generator."""
from tfgan_rec.gan.item_generator import (ContentGenerator,
                                          generate_item_embeddings,
                                          train_item_generator)
from tfgan_rec.gan.losses import GANLoss, gan_loss
from tfgan_rec.gan.models import Discriminator, Generator
from tfgan_rec.gan.trainer import GANData, GANDivergedError, GANTrainer
from tfgan_rec.gan.user_generator import (ThinUserQuery, UserGANTrainer,
                                          UserGenerator)

__all__ = ["ContentGenerator", "Discriminator", "GANData", "GANDivergedError",
           "GANLoss", "GANTrainer", "Generator", "ThinUserQuery",
           "UserGANTrainer", "UserGenerator", "gan_loss",
           "generate_item_embeddings", "train_item_generator"]

"""The GANs: the objective (`gan_loss`), the training loop they share
(distributed, resumable, guarded), the interaction generator and
discriminator, the user generator for thin and new users, and the new-item
generator."""
from tfgan_rec.gan.item_generator import (ContentGenerator, ItemGANTrainer,
                                          generate_item_embeddings,
                                          train_item_generator)
from tfgan_rec.gan.losses import GANLoss, gan_loss
from tfgan_rec.gan.loop import AdversarialLoop, GANDivergedError
from tfgan_rec.gan.models import Discriminator, Generator
from tfgan_rec.gan.trainer import GANData, GANTrainer
from tfgan_rec.gan.user_generator import (ThinUserQuery, UserGANTrainer,
                                          UserGenerator)

__all__ = ["AdversarialLoop", "ContentGenerator", "Discriminator", "GANData",
           "GANDivergedError", "GANLoss", "GANTrainer", "Generator",
           "ItemGANTrainer", "ThinUserQuery", "UserGANTrainer",
           "UserGenerator", "gan_loss", "generate_item_embeddings",
           "train_item_generator"]

"""Training: config, set-up, trainer, optimiser and schedule, augmentation, EMA, LR finder, export."""

# Promoted from runs/lab1_4/dags/my_trainer.py by shared.airflow_local.promote: edit what writes that draft
# (the notebook's cell that writes it), then promote again; an edit here is replaced.
"""
My trainer, promoted from Lab 1.3: `train_from_config(config, splits=None)` trains the
model the config describes, on the splits it is given (the pipeline's day of data) or, given
none, on the data `config.data` names. my_training_pipeline and my_retraining load it when
their tasks run.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared import data, paths, train
from shared.model import build_model


def build_my_model(model_config) -> nn.Module:
    if model_config.name != "mlp":
        return build_model(model_config)  # the CNN comes from the package
    layers, width = [nn.Flatten()], 28 * 28
    for hidden in model_config.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(model_config.dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def train_from_config(config, splits=None) -> dict:
    train.seed_everything(config.seed)
    if splits is None:  # Lab 1.3: the data config.data names
        splits = data.load_splits(
            paths.resolve(config.data.root),
            config.data.val_fraction,
            config.seed,
            config.data.subset,
        )
    device = train.select_device(config.training.device)
    model = build_my_model(config.model).to(device)

    def loader(split, shuffle: bool) -> DataLoader:
        dataset = TensorDataset(split.normalized(), split.labels)
        if not shuffle:
            return DataLoader(dataset, batch_size=1000)
        order = torch.Generator().manual_seed(config.seed)
        return DataLoader(
            dataset, batch_size=config.training.batch_size, shuffle=True, generator=order
        )

    train_loader, val_loader = loader(splits.train, True), loader(splits.val, False)
    if config.training.optimizer != "adam":
        raise ValueError(
            f"training.optimizer: this trainer knows adam, not {config.training.optimizer!r}"
        )
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.training.learning_rate,
        betas=config.training.betas,
        weight_decay=config.training.weight_decay,
    )
    schedule = train.make_schedule(optimizer, config.training, len(train_loader))
    history = []
    for epoch in range(1, config.training.epochs + 1):
        stats = train.train_one_epoch(model, train_loader, optimizer, device, schedule)
        schedule.epoch_done()
        val_accuracy = train.evaluate(model, val_loader, device)["accuracy"]
        history.append({"epoch": epoch, "train_loss": stats["loss"], "val_accuracy": val_accuracy})
    test_accuracy = train.evaluate(model, loader(splits.test, False), device)["accuracy"]
    return {"model": model, "history": history, "test_accuracy": test_accuracy}

"""The training loader in the trainers users run: torch DDP (gloo, 2 processes started as
torch.multiprocessing.spawn starts them), PyTorch Lightning and HF accelerate."""

from __future__ import annotations

import json
import multiprocessing
import socket

import pytest
import torch
from shardfactory import make_shard_dir

from stexture.loader import make_loader

SIZE = 12
BLOCKS = {"shuffle": "blocks", "shuffle_window": 2}  # 2 of the 6 shards open at a time


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 classes, 27 train samples."""
    return make_shard_dir(tmp_path_factory.mktemp("clients"), per_class=9, val_per_class=1,
                          size=SIZE, shard_size=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    # a rank torchrun starts forks its loader workers (Linux's default); one started the way
    # torch.multiprocessing.spawn does would spawn them, re-importing torch in each (slow)
    multiprocessing.set_start_method("fork", force=True)
    # built before the process group exists, as in trainer.fit(model, make_loader(...))
    loader = make_loader(root, k=0.5, batch_size=4, image_size=8, with_info=True,
                         num_workers=1, seed=3)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    model = torch.nn.Linear(3 * 8 * 8, 3)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        keys = []
        for x, y, info in loader:
            loss = torch.nn.functional.cross_entropy(ddp(x.flatten(1)), y)
            optimizer.zero_grad()
            loss.backward()  # a rank with fewer batches would hang here
            optimizer.step()
            keys.append(info["key"])
        epochs.append(keys)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"epochs": epochs, "len": len(loader)}, f)
    torch.distributed.destroy_process_group()


def test_two_process_ddp_splits_every_epoch_exactly(shards, tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(shards), str(tmp_path)),
                                nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["len"] == ranks[1]["len"] == 4  # 27 -> 28 samples, 14 per rank
    orders = []
    for epoch in (0, 1):
        per_rank = [r["epochs"][epoch] for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == 4
        flat = [k for batches in per_rank for batch in batches for k in batch]
        assert len(flat) == 28 and len(set(flat)) == 27  # one sample repeated to pad
        orders.append(flat)
    assert orders[0] != orders[1]


def test_accelerate_prepare_and_skip_first_batches(shards):
    accelerate = pytest.importorskip("accelerate")
    loader = make_loader(shards, k=0.5, batch_size=4, image_size=8, with_info=True, seed=1)
    loader.set_epoch(0)
    reference = [(x, info["key"]) for x, _, info in loader]
    accelerator = accelerate.Accelerator(cpu=True)
    prepared = accelerator.prepare(loader)
    assert prepared is not loader and len(prepared) == len(loader) == 7
    seen, ends = [], []
    for x, _, info in prepared:
        seen.append((x, info["key"]))
        ends.append(accelerator.gradient_state.end_of_dataloader)
    assert ends == [False] * 6 + [True]
    for (x0, k0), (x1, k1) in zip(reference, seen, strict=True):
        assert k0 == k1 and torch.equal(x0, x1)
    prepared.set_epoch(0)
    skipped = accelerator.skip_first_batches(prepared, 2)
    rest = [(x, info["key"]) for x, _, info in skipped]
    assert [k for _, k in rest] == [k for _, k in reference[2:]]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(rest, reference[2:], strict=True))


class _Recorder:
    """A LightningModule factory that records the keys of every training batch per epoch."""

    @staticmethod
    def module(lightning, log: dict):
        class Module(lightning.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = torch.nn.Linear(3 * 8 * 8, 3)

            def training_step(self, batch, _):
                x, y, info = batch
                log.setdefault(self.current_epoch, []).extend(info["key"])
                return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y)

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Module()


@pytest.mark.parametrize("shuffle", [{}, BLOCKS], ids=["global", "blocks"])
def test_lightning_trains_two_epochs_in_new_orders_and_resumes_epoch_one(shards, tmp_path,
                                                                         shuffle):
    lightning = pytest.importorskip("lightning.pytorch")
    options = {"k": 0.5, "batch_size": 4, "image_size": 8, "with_info": True, "seed": 5,
               **shuffle}
    common = {"accelerator": "cpu", "devices": 1, "logger": False, "default_root_dir": tmp_path,
              "enable_progress_bar": False, "enable_model_summary": False}
    first: dict[int, list[str]] = {}
    checkpoint = lightning.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1,
                                                     filename="{epoch}")
    trainer = lightning.Trainer(max_epochs=2, callbacks=[checkpoint], **common)
    trainer.fit(_Recorder.module(lightning, first), train_dataloaders=make_loader(shards,
                                                                                  **options))
    assert sorted(first) == [0, 1]
    assert sorted(first[0]) == sorted(first[1]) and len(first[0]) == 27
    assert first[0] != first[1]  # Lightning called set_epoch
    resumed: dict[int, list[str]] = {}
    trainer = lightning.Trainer(max_epochs=2, **common)
    trainer.fit(_Recorder.module(lightning, resumed),
                train_dataloaders=make_loader(shards, **options),
                ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    assert sorted(resumed) == [1] and resumed[1] == first[1]

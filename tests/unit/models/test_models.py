"""The workshop with torch: tiny synthetic training, export round trip, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the optional train extra; CI installs it")

from models.contract import check_signature, open_session  # noqa: E402
from models.embeddings import REQUIRED, load_embeddings  # noqa: E402
from models.export import export_model, load_checkpoint, verify  # noqa: E402
from models.options import NPZ_NAME, MFConfig, RankerConfig, TrainOptions  # noqa: E402
from models.ranker import Ranker  # noqa: E402
from models.train import run  # noqa: E402
from proxy.cli.main import main  # noqa: E402
from proxy.routing.sessions import load_model  # noqa: E402

DIM = 8


def tiny_options(tmp: Path) -> TrainOptions:
    return TrainOptions(
        data="synthetic",
        seed=7,
        out_dir=tmp,
        build_dir=tmp / "build",
        mf=MFConfig(dim=DIM, epochs=12, batch=512),
        versions=(
            RankerConfig(name="tiny_v1", hidden=(16, 8), epochs=3, batch=512),
            RankerConfig(
                name="tiny_v2",
                hidden=(16, 8),
                epochs=3,
                batch=512,
                negatives=2,
                sampling="popularity",
            ),
        ),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, float]]]:
    tmp = tmp_path_factory.mktemp("train")
    return tmp, run(tiny_options(tmp), log=False)


def test_ranker_shapes() -> None:
    model = Ranker()
    assert model(torch.zeros(5, 32), torch.zeros(5, 32)).shape == (5, 1)
    widths = [m.out_features for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [64, 32, 1]
    assert model.mlp[0].in_features == 64


def test_training_writes_the_npz_and_beats_random(
    trained: tuple[Path, dict[str, dict[str, float]]],
) -> None:
    tmp, metrics = trained
    emb = load_embeddings(tmp / NPZ_NAME)
    assert emb.user_vectors.shape == (200, DIM) and emb.user_vectors.dtype == np.float32
    assert emb.item_vectors.shape == (300, DIM)
    assert emb.dataset.startswith("synthetic")
    with np.load(tmp / NPZ_NAME) as npz:
        assert set(REQUIRED) <= set(npz.files)
        assert npz["item_vectors"].dtype == np.float16
    assert set(metrics) == {"popularity", "random", "mf_dot", "tiny_v1", "tiny_v2"}
    # The synthetic set has real structure: the learned scorers find it.
    assert metrics["mf_dot"]["ndcg@10"] > 2 * metrics["random"]["ndcg@10"]
    assert metrics["tiny_v1"]["recall@10"] > metrics["random"]["recall@10"]


def test_export_round_trip(trained: tuple[Path, dict[str, dict[str, float]]]) -> None:
    tmp, _ = trained
    model = load_checkpoint(tmp / "build" / "tiny_v1.pt")
    path = export_model(model, tmp / "tiny_v1.onnx")
    assert verify(model, path) < 1e-4  # batches 1, 100, 1000
    assert path.stat().st_size < 10_000
    assert not list(tmp.glob("*.onnx.data"))  # one self-contained file
    sig = check_signature(open_session(path.read_bytes()), DIM)
    assert (sig.dim, sig.output_rank) == (DIM, 2)
    # Served on the trained embeddings, the scores are torch's.
    emb = load_embeddings(tmp / NPZ_NAME)
    served = load_model("tiny_v1", path, DIM).score(emb.user_vectors[0], emb.item_vectors)
    with torch.no_grad():
        want = model(
            torch.from_numpy(emb.user_vectors[:1]).expand(len(emb.item_vectors), -1),
            torch.from_numpy(emb.item_vectors),
        )[:, 0].numpy()
    np.testing.assert_allclose(served, want, atol=1e-5)


def test_training_is_deterministic(
    tmp_path: Path, trained: tuple[Path, dict[str, dict[str, float]]]
) -> None:
    first, _ = trained
    opts = replace(tiny_options(tmp_path), versions=tiny_options(tmp_path).versions[:1])
    run(opts, log=False)
    a, b = load_embeddings(first / NPZ_NAME), load_embeddings(tmp_path / NPZ_NAME)
    assert np.array_equal(a.user_vectors, b.user_vectors)
    assert np.array_equal(a.item_vectors, b.item_vectors)
    export_model(load_checkpoint(first / "build" / "tiny_v1.pt"), tmp_path / "a.onnx")
    export_model(load_checkpoint(tmp_path / "build" / "tiny_v1.pt"), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_cli_train_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--data",
        "synthetic",
        "--dim",
        "4",
        "--mf-epochs",
        "1",
        "--epochs",
        "1",
        "--versions",
        "ranker_v1",
        "--out-dir",
        str(tmp_path),
        "--build-dir",
        str(tmp_path),
    ]
    assert main(["model", "train", *argv]) == 0
    assert "ranker_v1" in capsys.readouterr().out
    assert (
        main(
            [
                "model",
                "export",
                "--build-dir",
                str(tmp_path),
                "--out-dir",
                str(tmp_path),
                "--versions",
                "ranker_v1",
            ]
        )
        == 0
    )
    assert "max |ort - torch|" in capsys.readouterr().out
    assert main(["model", "check", str(tmp_path / "ranker_v1.onnx"), "--dim", "4"]) == 0

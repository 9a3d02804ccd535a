"""How good is a frozen representation? Nearest neighbours, kNN, linear probe, t-SNE, alignment,
uniformity. Taught in 05_evaluation_tsne_knn.

We embed digits once with the frozen model and ask how well simple readers (a weighted kNN vote,
a logistic regression) recover labels the encoder never saw. Baselines (raw pixels, the same
network with random weights) show how much of that accuracy SimCLR earned.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_teach.loss import check_temperature
from simclr_teach.memo import memoised
from simclr_teach.model import preprocess
from simclr_teach.utils import pick_device, sklearn_threads


def embed(
    model: nn.Module,
    images: Tensor,
    use: str = "h",
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> Tensor:
    """Features of a frozen SimCLR model: h = f(x) or z = g(f(x)) (Chen et al., 2020, sec. 2.1).

    Runs in eval mode (BatchNorm uses its running statistics, Dropout is off) without autograd,
    and puts every submodule back in the mode it was in, even if something fails.

    Args:
        images: uint8 digits (N, 28, 28) or (N, 1, 28, 28).
        use: "h" for the representation (kept after training), "z" for the projection.
        batch_size: digits per forward pass; bounds memory.
        device: where to run; default is the device of the model's parameters.

    Returns:
        float32 CPU tensor (N, D) with D = D_h or D_z.
    """
    if use not in ("h", "z"):
        raise ValueError(f"use must be 'h' (encoder output) or 'z' (head output), got {use!r}")
    h, z = embed_both(model, images, batch_size, device)
    return h if use == "h" else z


def embed_both(
    model: nn.Module,
    images: Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """h and z of the digits from one forward pass each (``embed`` of both, at the cost of one).

    Args and modes as ``embed``. Returns:
        float32 CPU tensors h (N, D_h) and z (N, D_z).
    """
    _check_batch_size(batch_size)
    images = torch.as_tensor(images)
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one digit")
    if device is None:
        tensors = [*model.parameters(), *model.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
    device = pick_device(device)  # a clear error for a device this machine lacks
    modes = [(module, module.training) for module in model.modules()]  # restored per module
    model.eval()
    try:
        hs, zs = [], []
        with torch.no_grad():  # not inference_mode: its tensors could not be trained on later
            for start in range(0, len(images), batch_size):
                # move uint8 first (4x fewer bytes than float), then scale to [0, 1]
                x = preprocess(images[start : start + batch_size].to(device))  # (B, 1, 28, 28)
                h, z = model(x)  # (B, D_h), (B, D_z)
                hs.append(h.float().cpu())
                zs.append(z.float().cpu())
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(hs), torch.cat(zs)


def _check_features(features: Tensor, labels: Tensor | None, name: str) -> None:
    if features.dim() != 2 or len(features) == 0:
        raise ValueError(f"{name}_features must be non-empty (N, D), got {tuple(features.shape)}")
    finite = torch.isfinite(features).all(dim=1)  # (N,)
    if not finite.all():
        rows = torch.nonzero(~finite).flatten()
        raise ValueError(
            f"{name}_features has NaN or inf in {len(rows)} row(s), the first is "
            f"row {rows[0].item()}; check the model that produced them, or drop "
            "those rows"
        )
    if labels is not None and labels.shape != (len(features),):
        raise ValueError(
            f"{name}_labels must have shape ({len(features)},) like {name}_features "
            f"has rows, got {tuple(labels.shape)}"
        )


def _check_batch_size(batch_size: int) -> None:
    integer = isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool)
    if not integer or batch_size < 1:
        raise ValueError(f"batch_size (rows per block) must be an int >= 1, got {batch_size!r}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k (neighbours) must be an int >= 1, got {k!r}")


def nearest_neighbours(
    queries: Tensor, references: Tensor, k: int = 8, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """The k references most cosine-similar to each query, batched over queries.

    Args:
        queries: (Q, D). references: (N, D); a query that is also a reference finds itself first.
        k: neighbours per query, capped at N.
        batch_size: queries per (batch_size, N) similarity block; bounds memory.

    Returns:
        (similarities, indices), both (Q, min(k, N)), most similar first.
    """
    _check_k(k)
    _check_batch_size(batch_size)
    if queries.shape[1] != references.shape[1]:
        raise ValueError(f"queries have D={queries.shape[1]}, references D={references.shape[1]}")
    k = min(k, len(references))
    references = F.normalize(references.float(), dim=1)  # (N, D), unit rows: dot = cosine
    sims, indices = [], []
    for start in range(0, len(queries), batch_size):
        q = F.normalize(queries[start : start + batch_size].float().to(references.device), dim=1)
        top_sim, top_idx = (q @ references.T).topk(k, dim=1)  # (B, N) -> (B, k)
        sims.append(top_sim)
        indices.append(top_idx)
    return torch.cat(sims), torch.cat(indices)


def neighbours_state(
    index: int, spaces: Mapping[str, tuple[Tensor, Tensor]], k: int = 8
) -> dict[str, Tensor]:
    """The k bank digits nearest to query ``index`` in each space. Taught in 05 (the explorer).

    Nearest means most cosine-similar (``nearest_neighbours``), the geometry the kNN
    classifier reads.

    Args:
        index: which query, 0 <= index < Q.
        spaces: name -> (query features (Q, D), bank features (N, D)); D may differ between
            spaces, Q and N may not.
        k: neighbours per space, >= 1 (capped at N).

    Returns:
        {name: int64 (min(k, N),) bank indices, most similar first}, in the order of ``spaces``.
    """
    if not spaces:
        raise ValueError("spaces is empty; pass {name: (query_features, bank_features)}")
    sizes = {(len(q), len(b)) for q, b in spaces.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"every space needs the same queries and bank, got (Q, N) = {sorted(sizes)}"
        )
    queries = sizes.pop()[0]
    if not 0 <= index < queries:
        raise ValueError(f"index must be in [0, {queries - 1}] (one of the queries), got {index}")
    return {
        name: nearest_neighbours(torch.as_tensor(q)[index : index + 1], torch.as_tensor(b), k)[1][0]
        for name, (q, b) in spaces.items()
    }


def neighbour_agreement(
    neighbours: Mapping[str, Tensor], bank_labels: Tensor, label: int
) -> dict[str, int]:
    """How many of each space's neighbours (from ``neighbours_state``) have the query's label.

    Args:
        neighbours: name -> int64 (k,) bank indices. bank_labels: (N,) labels of the bank.
        label: the query's label.

    Returns:
        {name: count in [0, k]}, in the order of ``neighbours``.
    """
    bank_labels = torch.as_tensor(bank_labels)
    return {
        name: int((bank_labels[indices] == label).sum()) for name, indices in neighbours.items()
    }


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 20,
    temperature: float = 0.1,
    batch_size: int = 1024,
    leave_one_out: bool = False,
) -> Tensor:
    """Weighted kNN on cosine similarity (Wu et al., 2018, sec. 3.4), the usual SimCLR monitor.

    Each of the k nearest training points votes for its label with weight exp(sim / temperature).

    Args:
        train_features: (N, D); train_labels: (N,) integer classes >= 0. test_features: (M, D).
        k: neighbours that vote, capped at N. temperature: > 0; lower trusts the closest more.
        batch_size: test queries per block, so memory stays O(batch_size * N).
        leave_one_out: test_features are the training points themselves (M = N, same order);
            each is classified by the others, never by itself. Every labelled digit then serves
            as a query: 8x the queries of a 50-per-class split, so ~3x less sampling noise.

    Returns:
        int64 predicted labels (M,).
    """
    train_features, test_features = torch.as_tensor(train_features), torch.as_tensor(test_features)
    train_labels = torch.as_tensor(train_labels)
    _check_features(train_features, train_labels, "train")
    _check_features(test_features, None, "test")
    _check_k(k)
    _check_batch_size(batch_size)
    check_temperature(temperature)
    if train_labels.is_floating_point() or int(train_labels.min()) < 0:
        raise ValueError("train_labels must be integer classes >= 0 (e.g. digits 0..9)")
    train_labels = train_labels.long().to(train_features.device)
    num_classes = int(train_labels.max()) + 1
    if leave_one_out and test_features.shape != train_features.shape:
        raise ValueError(
            f"leave_one_out needs test_features to be the training features, got "
            f"{tuple(test_features.shape)} and {tuple(train_features.shape)}"
        )
    sims, indices = nearest_neighbours(
        test_features, train_features, k + leave_one_out, batch_size
    )  # (M, k) or (M, k + 1)
    if leave_one_out:  # drop each query's own entry (or the last one, if a twin ranked first)
        own = indices == torch.arange(len(indices), device=indices.device)[:, None]
        own[:, -1] |= ~own.any(dim=1)
        sims, indices = sims[~own].view(len(sims), -1), indices[~own].view(len(sims), -1)
    # softmax = exp(sim / t) rescaled per query: same vote, no overflow at small t
    weights = torch.softmax(sims / temperature, dim=1)  # (M, k)
    votes = torch.zeros(len(sims), num_classes, device=sims.device)
    votes.scatter_add_(1, train_labels[indices], weights)  # (M, C) summed weight per class
    return votes.argmax(dim=1)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.1,
    batch_size: int = 1024,
    leave_one_out: bool = False,
) -> float:
    """Fraction of test points whose weighted kNN vote (see ``knn_predict``) is right, in [0, 1]."""
    test_features, test_labels = torch.as_tensor(test_features), torch.as_tensor(test_labels)
    _check_features(test_features, test_labels, "test")
    predicted = knn_predict(
        train_features, train_labels, test_features, k, temperature, batch_size, leave_one_out
    )
    return (predicted.cpu() == test_labels.cpu().long()).float().mean().item()


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> float:
    """Linear evaluation (Chen et al., 2020, sec. 2.3): logistic regression on frozen features.

    Features are standardised with the mean and std of the training set only (no test leakage).

    Args:
        train_features: (N, D); train_labels: (N,). test_features: (M, D); test_labels: (M,).
        C: inverse L2 strength of scikit-learn's LogisticRegression. max_iter: solver steps.
        seed: ``random_state`` of the solver.

    Returns:
        Test accuracy in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression  # imported here: keeps import light
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _check_features(torch.as_tensor(train_features), torch.as_tensor(train_labels), "train")
    _check_features(torch.as_tensor(test_features), torch.as_tensor(test_labels), "test")
    classifier = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    probe = make_pipeline(StandardScaler(), classifier)  # scaler is fit on train only
    with sklearn_threads():
        probe.fit(_numpy(train_features), _numpy(train_labels))
        return float(probe.score(_numpy(test_features), _numpy(test_labels)))


@memoised
def score_h_and_z(
    model: nn.Module, images: Tensor, labels: Tensor, val: Tensor
) -> dict[str, float]:
    """How well h and z of a trained model classify digits, without touching the test split (08).

    kNN: weighted kNN@20 with each training digit left out of its own vote (the lab's score,
    ``lab.loo_knn``). Linear probe: fitted on the training digits outside ``val``, scored on
    ``val``.

    Args:
        model: returns (h, z) from ``forward``.
        images: uint8 (M, 28, 28) training digits; labels: (M,).
        val: bool (M,) validation mask (``train.validation_split``).

    Returns:
        {"kNN h", "kNN z", "probe h", "probe z"}: accuracies in [0, 1].
    """
    scores = {}
    for use in ("h", "z"):
        x = embed(model, images, use)  # (M, D)
        scores[f"kNN {use}"] = knn_accuracy(x, labels, x, labels, leave_one_out=True)
        scores[f"probe {use}"] = linear_probe(x[~val], labels[~val], x[val], labels[val])
    return {name: scores[name] for name in ("kNN h", "kNN z", "probe h", "probe z")}


def tsne(features: Tensor, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE map (van der Maaten & Hinton, 2008) with PCA init; same seed, same map.

    Args:
        features: (N, D). When D > 50, PCA first reduces to 50 dims (the usual speed-up).
        seed: seeds PCA and t-SNE. perplexity: about the number of neighbours kept; < N.

    Returns:
        float32 array (N, 2).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = _numpy(features).astype(np.float32)
    if x.ndim != 2 or perplexity >= len(x):
        raise ValueError(
            f"need (N, D) features with N > perplexity={perplexity}, got {x.shape}; "
            "pass more points or a smaller perplexity"
        )
    with sklearn_threads():
        if x.shape[1] > 50 and len(x) > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)  # (N, 50)
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs, on the sphere (Wang & Isola, 2020, sec. 4.1).

    Args:
        z1, z2: (N, D) features of the two views; row i of z1 and row i of z2 are a positive pair.

    Returns:
        In [0, 2^alpha]; 0 when both views land on the same point (lower is better).
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)  # unit rows
    return (z1 - z2).norm(dim=1).pow(alpha).mean().item()


def uniformity(z: Tensor, t: float = 2) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over distinct pairs (Wang & Isola, 2020, sec. 4.1).

    Args:
        z: (N, D) features, N >= 2; normalised to the unit sphere here.

    Returns:
        In [-4t, 0]: 0 when all points collapse to one, more negative when spread out.
    """
    if z.dim() != 2 or len(z) < 2:
        raise ValueError(f"uniformity needs (N, D) features with N >= 2, got {tuple(z.shape)}")
    z = F.normalize(z.float(), dim=1)
    squared_distances = torch.pdist(z).pow(2)  # (N(N-1)/2,) one per pair i < j, each in [0, 4]
    return squared_distances.mul(-t).exp().mean().log().item()


def pixel_features(images: Tensor) -> Tensor:
    """Baseline: raw pixels as features. uint8 (N, 28, 28) -> float32 (N, 784) in [0, 1]."""
    return preprocess(torch.as_tensor(images)).flatten(1)


def random_init_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Baseline: a copy of ``model`` with fresh random weights (``reset_parameters`` everywhere).

    Seeded inside ``torch.random.fork_rng``, so the global RNG is left as it was. BatchNorm
    running statistics are reset too. ``model`` itself is not touched.
    """
    fresh = copy.deepcopy(model)
    cuda = sorted({p.device.index or 0 for p in fresh.parameters() if p.is_cuda})
    resets = 0
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                resets += 1
    if resets == 0 and any(True for _ in fresh.parameters()):
        raise ValueError("no submodule has reset_parameters(); give custom layers one")
    return fresh


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of ``protocol.evaluation_table`` rows; accuracies in percent."""
    if not rows:
        raise ValueError("rows is empty; pass the list that protocol.evaluation_table returns")
    metrics = [key for key in rows[0] if key not in ("features", "dim")]
    width = max(len("features"), *(len(str(row["features"])) for row in rows))
    header = f"{'features':<{width}}  {'dim':>5}" + "".join(f"  {m:>8}" for m in metrics)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = [f"{100 * row[m]:8.1f}" if row.get(m) is not None else f"{'-':>8}" for m in metrics]
        lines.append(f"{row['features']:<{width}}  {row['dim']:>5}  " + "  ".join(cells))
    return "\n".join(lines)


def neighbour_confusion(features: Tensor, labels: Tensor, k: int = 10) -> Tensor:
    """Which digits sit next to which: the label mix of each point's k nearest neighbours.

    Taught in 05_evaluation_tsne_knn: the local structure a t-SNE map draws, as numbers. The
    neighbours are the other points of the same set (a point is never its own neighbour).

    Args:
        features: (N, D). labels: (N,) integer classes 0..C-1. k: neighbours per point, < N.

    Returns:
        float32 (C, C): row c is the average, over the points of class c, of the fraction of their
        k neighbours in each class; rows sum to 1 and the diagonal is the agreement per class.
    """
    features, labels = torch.as_tensor(features), torch.as_tensor(labels).long()
    _check_features(features, labels, "input")
    if not 1 <= k < len(features):
        raise ValueError(f"k must be in [1, {len(features) - 1}] (other points), got {k}")
    _, indices = nearest_neighbours(features, features, k + 1)  # (N, k + 1), itself usually first
    rows = torch.arange(len(features)).unsqueeze(1)
    not_self = indices != rows  # (N, k + 1); drops itself
    keep = torch.where(
        not_self.all(dim=1, keepdim=True),  # duplicates may hide it: drop last
        torch.arange(k + 1) < k,
        not_self,
    )
    neighbours = indices[keep].view(len(features), k)  # (N, k)
    num_classes = int(labels.max()) + 1
    counts = F.one_hot(labels[neighbours], num_classes).float().mean(dim=1)  # (N, C) fractions
    confusion = torch.zeros(num_classes, num_classes).index_add_(0, labels, counts)
    return confusion / labels.bincount(minlength=num_classes).clamp(min=1).unsqueeze(1)

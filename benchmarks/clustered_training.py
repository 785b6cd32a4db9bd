"""Clustered training (Parikh & Aggarwal 2020) on Fashion-MNIST, measured honestly.

1. The "card": EfficientNet-Lite0 features (``dcsi.extract_features``, default backbone
   and size) of a pool of training images -> ``dcsi.class_similarity`` ->
   ``dcsi.cluster_classes`` (average linkage) -> partitions for k = 2 and 3.
2. Flat training: one small CNN for all 10 classes.
3. Clustered training, k = 2 and 3: one CNN of the same architecture per cluster,
   trained on that cluster's classes only (same epochs, same training images).
4. Test queries are routed by ``dcsi.Router`` (class sums of the pool) to one cluster
   model; end-to-end accuracy counts a routing error as a wrong answer whatever the
   cluster model says.  We also report the routing error rate, each cluster's accuracy
   on its own (correctly routed) queries -- the paper's figure, which leaves routing
   errors out -- and training time.

The training set is subsampled (``--train-per-class``) so that everything runs on a
2-core CPU in minutes; the test queries are ``--test-per-class`` images per class of the
official test split.

    python benchmarks/clustered_training.py            # the README figures
    python benchmarks/clustered_training.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, print_table, write_results


def small_cnn(n_out: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16 x 14 x 14
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 32 x 7 x 7
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, n_out),
    )


def train(
    images: np.ndarray,
    labels: np.ndarray,
    n_out: int,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 1e-3,
):
    import torch

    torch.manual_seed(seed)
    model = small_cnn(n_out)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    return model


def predict(model, images: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 512):
            out.append(model(x[i : i + 512]).argmax(1).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=300)
    p.add_argument(
        "--pool-per-class",
        type=int,
        default=300,
        help="training images per class whose features make the card",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--linkage", default="average")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=None)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 150 train / 30 test / 60 pool images per class, 1 epoch",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.train_per_class, args.test_per_class, args.pool_per_class = 150, 30, 60
        args.epochs = 1

    import torch

    import dcsi
    from dcsi.clusters import Router, cluster_classes, routing_error
    from dcsi.samples import load_sample
    from dcsi.similarity.class_cosine import class_similarity, class_stats

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    tr, te = load_sample("fashion-mnist", "train"), load_sample("fashion-mnist", "test")
    sel = np.concatenate(
        [rng.permutation(np.flatnonzero(tr.labels == c))[: args.train_per_class] for c in range(10)]
    )
    pool = np.concatenate([sel[tr.labels[sel] == c][: args.pool_per_class] for c in range(10)])
    tsel = np.concatenate(
        [rng.permutation(np.flatnonzero(te.labels == c))[: args.test_per_class] for c in range(10)]
    )
    xtr, ytr = tr.images[sel], tr.labels[sel]
    xte, yte = te.images[tsel], te.labels[tsel]

    # 1. the card's similarity, clusters and router
    with Timer() as t_card:
        fs = dcsi.extract_features(tr.images[pool], labels=tr.labels[pool], cache=args.cache)
        S = class_similarity(fs.features, tr.labels[pool])
        cc = cluster_classes(
            S, linkage=args.linkage, class_counts=np.bincount(tr.labels[pool]), classes=tr.classes
        )
        st = class_stats(fs.features, tr.labels[pool])
    with Timer() as t_query:
        q = dcsi.extract_features(xte, labels=yte, cache=args.cache)
    qf = np.asarray(q.features)

    results: dict = {
        "card": {
            "recommended_k": cc.recommended_k,
            "verdict": cc.verdict,
            "partitions": cc.to_dict()["partitions"],
            "members": cc.to_dict()["members"],
            "seconds": t_card.seconds,
            "image_size": fs.image_size,
            "backbone": fs.backbone,
        },
        "query_feature_seconds": t_query.seconds,
        "runs": [],
    }
    rows = []

    # 2. flat
    with Timer() as t:
        flat = train(xtr, ytr, 10, epochs=args.epochs, seed=args.seed)
    acc_flat = float(np.mean(predict(flat, xte) == yte))
    rows.append(["flat", 1, acc_flat, "-", "-", "-", t.seconds])
    results["runs"].append(
        {"setting": "flat", "k": 1, "end_to_end_accuracy": acc_flat, "train_seconds": t.seconds}
    )

    # 3. clustered, k = 2 and 3
    for k in (2, 3):
        assign = cc.assignment(k)
        router = Router(st.sums, st.counts, assign, fs.backbone, image_size=fs.image_size)
        routed = router.route_features(qf)
        r_err = routing_error(router, qf, yte)
        pred = np.full(len(yte), -1)
        per_cluster = []
        t_total = 0.0
        for c in range(int(assign.max()) + 1):
            members = np.flatnonzero(assign == c)
            mtr = np.isin(ytr, members)
            if len(members) == 1:
                # a one-class cluster needs no model: every query routed there gets it
                model = None
                t_c = 0.0
            else:
                with Timer() as tc:
                    model = train(
                        xtr[mtr],
                        np.searchsorted(members, ytr[mtr]),
                        len(members),
                        epochs=args.epochs,
                        seed=args.seed + c,
                    )
                t_c = tc.seconds
            t_total += t_c
            to_c = routed == c
            if to_c.any():
                pred[to_c] = members[0] if model is None else members[predict(model, xte[to_c])]
            own = np.isin(yte, members)
            own_routed = own & to_c
            acc_c = (
                float(np.mean(pred[own_routed] == yte[own_routed])) if own_routed.any() else None
            )
            # the paper's figure: the cluster model on all of its own test images
            if model is None:
                acc_oracle = 1.0
            else:
                acc_oracle = float(np.mean(members[predict(model, xte[own])] == yte[own]))
            per_cluster.append(
                {
                    "cluster": c,
                    "classes": [tr.classes[i] for i in members],
                    "accuracy_oracle_routing": acc_oracle,
                    "accuracy_on_correctly_routed": acc_c,
                    "n_test": int(own.sum()),
                    "train_seconds": t_c,
                }
            )
        acc = float(np.mean(pred == yte))
        oracle = float(np.mean([pc["accuracy_oracle_routing"] for pc in per_cluster]))
        rows.append(
            [
                f"clustered k={k}",
                k,
                acc,
                r_err,
                oracle,
                "; ".join(f"{pc['accuracy_oracle_routing']:.3f}" for pc in per_cluster),
                t_total,
            ]
        )
        results["runs"].append(
            {
                "setting": "clustered",
                "k": k,
                "end_to_end_accuracy": acc,
                "routing_error": r_err,
                "mean_cluster_accuracy_oracle_routing": oracle,
                "clusters": per_cluster,
                "train_seconds": t_total,
            }
        )

    print(
        f"\nFashion-MNIST, {args.train_per_class} training images/class, "
        f"{args.test_per_class} test images/class, {args.epochs} epochs, "
        f"{args.threads} torch threads; clusters from EfficientNet-Lite0 cnn_cosine "
        f"({args.linkage} linkage); {cc.verdict}\n"
    )
    for k in (2, 3):
        print(f"k={k}: " + " | ".join(", ".join(m) for m in cc.clusters(k)))
    print()
    print_table(
        rows,
        [
            "setting",
            "k",
            "end-to-end accuracy (routing included)",
            "routing error",
            "mean per-cluster accuracy (oracle routing)",
            "per-cluster accuracy",
            "training seconds",
        ],
    )
    name = "clustered_training_quick" if args.quick else "clustered_training"
    path = write_results(name, {"params": vars(args), **results})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
